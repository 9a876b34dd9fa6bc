"""Teacher stage: a teacher LLM writes a rationale and a label for every training input.

    stepdistill extract --task svamp --teacher openai --base-url http://127.0.0.1:8080/v1 --model m --limit 10
    stepdistill teachers

Few-shot chain-of-thought prompts (``prompts``), teacher backends behind a registry (``backends``),
robust and official parsers (``parsing``), a resumable SQLite store (``store``) and the stage itself
(``extract.run``), whose JSONL export is what the student stage reads as ``data.rationales``.
"""

from stepdistill.teacher.backends import TEACHERS, Completion, Job, TeacherSettings, create_teacher
from stepdistill.teacher.extract import ExtractConfig, ExtractResult, run
from stepdistill.teacher.parsing import Parsed, parse_official, parse_output
from stepdistill.teacher.prompts import PromptTemplate, build_template
from stepdistill.teacher.store import RationaleStore, TeacherRecord

__all__ = [
    "TEACHERS", "Completion", "ExtractConfig", "ExtractResult", "Job", "Parsed", "PromptTemplate", "RationaleStore",
    "TeacherRecord", "TeacherSettings", "build_template", "create_teacher", "parse_official", "parse_output", "run",
]
