"""Results: the typed result of a job (`types`), the files and tables it lands in (`store`), what it depends on
beyond its config (`validity`) and its console summary (`console`). What happens to a job (reuse, recording whatever
happens, exit codes) is `specsweep.job`."""

from specsweep.results.console import print_summary
from specsweep.results.store import (
    RESULT_FILE,
    TABLE_FILE,
    append_row,
    clean,
    config_hash,
    find_done,
    read_table,
    write_result,
)
from specsweep.results.types import IDENTITY_FIELDS, Result, objective

__all__ = [
    "IDENTITY_FIELDS",
    "RESULT_FILE",
    "TABLE_FILE",
    "Result",
    "append_row",
    "clean",
    "config_hash",
    "find_done",
    "objective",
    "print_summary",
    "read_table",
    "write_result",
]
