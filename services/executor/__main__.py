from services.common.lifecycle import main
from services.executor.service import ExecutorService

main(ExecutorService())
