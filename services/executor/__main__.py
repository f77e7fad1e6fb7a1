from services.executor.memory import limit_malloc_arenas

limit_malloc_arenas()  # before any thread starts

from services.common.lifecycle import main  # noqa: E402
from services.executor.service import ExecutorService  # noqa: E402

main(ExecutorService())
