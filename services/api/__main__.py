from services.api.service import ApiService
from services.common.lifecycle import main

main(ApiService())
