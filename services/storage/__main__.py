from services.common.lifecycle import main
from services.storage.service import StorageService

main(StorageService())
