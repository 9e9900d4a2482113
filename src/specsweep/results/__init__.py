"""Results: the typed result of a job (`types`), the files and tables it lands in (`store`), and recording a job
whatever happens (`job`)."""

from specsweep.results.job import JobFailed, JobPaths, failed_job, objective, print_summary, recording, reusable_result
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
from specsweep.results.types import IDENTITY_FIELDS, Result

__all__ = [
    "IDENTITY_FIELDS",
    "RESULT_FILE",
    "TABLE_FILE",
    "JobFailed",
    "JobPaths",
    "Result",
    "append_row",
    "clean",
    "failed_job",
    "config_hash",
    "find_done",
    "objective",
    "print_summary",
    "read_table",
    "recording",
    "reusable_result",
    "write_result",
]
