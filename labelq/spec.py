"""Task specs: what to ask the teacher, how to prompt the student, what an answer must be.

A spec is a TOML file. Built-in specs live in ``labelq/specs/``; users add
their own in ``LABELQ_SPECS_DIR`` (a file there with the same name wins). A
spec's ``prompt_version`` is a hash of its prompts and contract, so labels,
cache entries and adapters say which prompts produced them.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labelq.errors import ConfigError

BUILTIN_DIR = Path(__file__).parent / "specs"


class TeacherPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field(min_length=1)
    user_template: str = Field(default="<session>\n{session}\n</session>")
    max_output_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _has_slot(self) -> TeacherPrompt:
        if "{session}" not in self.user_template:
            raise ValueError("teacher.user_template must contain {session}")
        return self


class StudentPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _has_slot(self) -> StudentPrompt:
        if "{session}" not in self.prompt:
            raise ValueError("student.prompt must contain {session}")
        return self


class Contract(BaseModel):
    """What an answer must be: at most ``max_words`` words / ``max_chars`` characters, or JSON."""

    model_config = ConfigDict(extra="forbid")

    max_words: int | None = Field(default=None, gt=0)
    max_chars: int | None = Field(default=None, gt=0)
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Contract:
        if self.json_schema is None and self.max_words is None and self.max_chars is None:
            raise ValueError("a contract needs max_words, max_chars or json_schema")
        if self.json_schema is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"contract.json_schema is not a valid JSON schema: {exc.message}") from exc
        return self


class RenderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=600, gt=20)
    max_value_chars: int = Field(default=80, gt=8)
    events_field: str | None = None  # None: find the first list of objects


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str = ""
    teacher: TeacherPrompt
    student: StudentPrompt
    contract: Contract
    render: RenderOptions = Field(default_factory=RenderOptions)
    budget_usd: float | None = Field(default=None, ge=0)

    @property
    def prompt_version(self) -> str:
        """Changes whenever anything that shapes an answer changes."""
        material = self.model_dump_json(include={"teacher", "student", "contract", "render"})
        return hashlib.blake2b(material.encode(), digest_size=6).hexdigest()


def _parse(path: Path) -> TaskSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return TaskSpec.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"task spec {path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"task spec {path} is invalid: {exc}") from exc


def spec_paths(specs_dir: Path | None) -> dict[str, Path]:
    found = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}
    if specs_dir is not None and specs_dir.is_dir():
        found.update({p.stem: p for p in sorted(specs_dir.glob("*.toml"))})
    return found


def load_spec(name: str, specs_dir: Path | None = None) -> TaskSpec:
    """The spec named ``name`` (file stem); ConfigError naming the ones that exist otherwise."""
    paths = spec_paths(specs_dir)
    if name not in paths:
        raise ConfigError(f"no task spec {name!r}; known: {', '.join(sorted(paths)) or 'none'}")
    spec = _parse(paths[name])
    if spec.name != name:
        raise ConfigError(f"task spec {paths[name]} is named {spec.name!r}, not {name!r}")
    return spec
