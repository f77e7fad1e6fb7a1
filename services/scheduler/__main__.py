from services.common.lifecycle import main
from services.scheduler.service import SchedulerService

main(SchedulerService())
