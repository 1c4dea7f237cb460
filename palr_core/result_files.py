"""Reading a run's files back (``metrics.json``, ``rankings.parquet``, checkpoints) without trusting them.

``palr report``, ``palr export``, :func:`palr.load_run`, a finished run started again and a resumed
training read what a run wrote, and a folder may hold a file palr did not write as it is (edited,
truncated, crafted).
Each reader checks every field it hands on and refuses, in one line that names the file and the
field and says what was expected, anything else: never a traceback, never a number in a report that
the file did not hold. A text field is shown in a markdown table only through :func:`markdown_cell`,
so a newline or ``|`` in a model name cannot change the table's structure.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

__all__ = ["ResultFileError", "read_metrics", "read_rankings", "read_recommendations", "read_checkpoint",
           "check_weights", "check_model_files", "markdown_cell", "RANKING_TYPES", "RECOMMENDATION_TYPES"]

#: metrics that are shares of users or items: anything outside [0, 1] was not computed by palr
_SHARES = re.compile(r"(HR|NDCG|MRR|Coverage)@\d+")
#: what ``palr-run`` needs of a metrics.json to report a finished run again (``palr report`` only needs rows)
FINISHED_RUN_KEYS = ("rows", "stats", "timings_s", "dataset", "users_evaluated")
_REWRITE = "run the run again to rewrite it"
_MISSING = object()


class ResultFileError(ValueError):
    """A result file that is not as palr writes it; the message is one line naming file and field."""


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return "null" if value is None else next((n for t, n in names.items() if isinstance(value, t)), "a value")


def _shown(value) -> str:
    text = json.dumps(value, allow_nan=True)  # one line: json escapes newlines
    return text if len(text) <= 60 else text[:57] + "..."


def _strict_constant(name: str):
    raise ValueError(f"it holds {name}, which strict JSON has not (palr writes a missing number as null)")


def read_metrics(path: str | Path, required: tuple[str, ...] = ("rows",)) -> dict:
    """A run's ``metrics.json``, checked: an object with ``required`` keys; ``rows`` a non-empty
    array of objects with a text ``model`` and the same metric keys, each a finite
    number (HR, NDCG, MRR, Coverage within [0, 1]) or null, returned as NaN; ``dataset`` text,
    ``users_evaluated`` a whole number >= 0, ``timings_s`` finite seconds >= 0, and the other
    sections objects. Raises :class:`ResultFileError` naming the file and field."""
    path = Path(path)

    def refuse(field: str, expected: str, value=_MISSING) -> None:
        got = ("it is missing" if value is _MISSING else "got null" if value is None
               else f"got {_json_type(value)} {_shown(value)}")
        raise ResultFileError(f"{path}: {field} must be {expected}, {got}; {_REWRITE}")

    try:
        saved = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_strict_constant)
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: not UTF-8 text (byte {exc.start}); {_REWRITE}") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                              f"{_REWRITE}") from None
    except ValueError as exc:  # NaN, Infinity, or an integer too long to read
        raise ResultFileError(f"{path}: not a metrics file palr writes ({str(exc).splitlines()[0]}); "
                              f"{_REWRITE}") from None
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(saved, dict):
        refuse("the file", "a JSON object with rows, dataset, users_evaluated...", saved)
    for key in required:
        if key not in saved:
            raise ResultFileError(f"{path}: no {key!r} key (expected {', '.join(required)}); {_REWRITE}")
    rows = saved.get("rows")
    if not isinstance(rows, list) or not rows:
        refuse("rows", "a non-empty array of result rows", saved.get("rows", _MISSING))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            refuse(f"rows[{i}]", "an object (model and metrics)", row)
        if not isinstance(row.get("model"), str) or not row["model"].strip():
            refuse(f"rows[{i}].model", "the row's name as text", row.get("model", _MISSING))
        keys = [k for k in row if k != "model"]
        first = [k for k in rows[0] if k != "model"]
        if sorted(keys) != sorted(first):
            raise ResultFileError(f"{path}: rows[{i}] has the metrics {', '.join(keys) or 'none'}, rows[0] "
                                  f"{', '.join(first) or 'none'}; every row must have the same; {_REWRITE}")
        for key in keys:
            row[key] = _metric(row[key], key, f"rows[{i}].{key}", refuse)
    if "dataset" in saved and not isinstance(saved["dataset"], str):
        refuse("dataset", "the dataset's name as text", saved["dataset"])
    users = saved.get("users_evaluated", 0)
    if isinstance(users, bool) or not isinstance(users, int) or users < 0:
        refuse("users_evaluated", "a whole number >= 0", users)
    for section in ("stats", "validation", "training", "timings_s", "peak_memory_gb"):
        if section in saved and not isinstance(saved[section], dict):
            refuse(section, "an object", saved[section])
    for stage, seconds in saved.get("timings_s", {}).items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
            refuse(f"timings_s.{stage}", "seconds (a finite number >= 0)", seconds)
    validation = saved.get("validation", {})
    for role in ("retriever", "ranker"):
        if role in validation and not isinstance(validation[role], dict):
            refuse(f"validation.{role}", "an object", validation[role])
    for key, value in validation.get("retriever", {}).items():
        validation["retriever"][key] = _metric(value, key, f"validation.retriever.{key}", refuse)
    return saved


def _metric(value, key: str, field: str, refuse) -> float:
    if value is None:
        return math.nan  # palr writes a metric it could not compute as null
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        refuse(field, "a number (or null)", value)
    if _SHARES.fullmatch(key) and not 0 <= value <= 1:
        refuse(field, "a share between 0 and 1", value)
    return float(value)


#: the columns of ``rankings.parquet`` and the Arrow types palr writes them as
RANKING_TYPES = {"user": "id", "rank": "position", "item": "id", "title": "text", "retriever_rank": "position",
                 "retriever_score": "number", "held_out": "flag"}
_EXPECTED = {"id": "whole numbers or text", "position": "positions from 1", "text": "text",
             "number": "numbers", "flag": "true/false"}


#: the columns of ``recommendations.parquet``: each precomputed user's top K after their whole
#: history, with how long that history was and its last item's title (``palr recommend`` prints both)
RECOMMENDATION_TYPES = {"user": "id", "rank": "position", "item": "id", "title": "text", "retriever_rank": "position",
                        "retriever_score": "number", "history_length": "position", "last_title": "text"}
#: what ``recommendations.parquet``'s schema metadata (key ``palr``) holds: the ranker's row label,
#: the retriever's name, how many candidates each user's were ranked from, ``eval.candidates``
#: (as :func:`palr_core.ranking.candidate_count` reads it) and how many items each user has
RECOMMENDATION_META = {"ranker": str, "retriever": str, "candidates": int, "eval_candidates": int, "k": int}


def read_rankings(path: str | Path, columns: list[str] | None = None):
    """``rankings.parquet`` (or the given ``columns`` of it) as a pyarrow Table, checked: each column
    of its type, no missing values, ranks from 1. Raises :class:`ResultFileError` naming the file
    and column."""
    return _read_table(Path(path), RANKING_TYPES, columns, "a rankings file")[0]


def read_recommendations(path: str | Path, users: list[str]) -> tuple[object, dict]:
    """The rows of ``recommendations.parquet`` for ``users`` (ids as typed: ``"42"`` names user 42)
    as a pyarrow Table, and what the file says of itself (:data:`RECOMMENDATION_META`), both checked
    as :func:`read_rankings` checks its columns. Raises :class:`ResultFileError` naming the file and field."""
    path = Path(path)
    table, schema = _read_table(path, RECOMMENDATION_TYPES, None, "a recommendations file", users)
    what = f"{path} is not a recommendations file palr wrote"
    try:
        meta = json.loads((schema.metadata or {}).get(b"palr", b"null"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ResultFileError(f"{what}: its metadata has no 'palr' object; {_REWRITE}")
    for key, kind in RECOMMENDATION_META.items():
        value = meta.get(key, _MISSING)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            expected = "a whole number >= 1" if kind is int else "text"
            got = "it is missing" if value is _MISSING else f"got {_shown(value)}"
            raise ResultFileError(f"{what}: metadata {key!r} must be {expected}, {got}; {_REWRITE}")
    return table, meta


def _read_table(path: Path, types: dict[str, str], columns: list[str] | None, kind_of_file: str,
                users: list[str] | None = None):
    """A result table and its schema, every column checked against ``types``; with ``users``, only
    their rows (matched on the ``user`` column, whose type says whether ``"42"`` is a number)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = list(types) if columns is None else columns
    what = f"{path} is not {kind_of_file} palr wrote"
    try:
        schema = pq.read_schema(path)
        missing = [c for c in columns if schema.get_field_index(c) < 0]
        if missing:
            raise ResultFileError(f"{what}: no column {', '.join(map(repr, missing))} (it has "
                                  f"{', '.join(schema.names) or 'none'}); {_REWRITE}")
        if users is None:
            table = pq.read_table(path, columns=columns)
        else:  # only the asked users' rows are read (row groups whose ids cannot match are skipped)
            numeric = pa.types.is_integer(schema.field("user").type)
            wanted = [int(u) for u in users if re.fullmatch(r"-?\d{1,18}", u)] if numeric else list(users)
            table = (pq.read_table(path, columns=columns, filters=[("user", "in", wanted)]) if wanted
                     else schema.empty_table().select(columns))
    except (OSError, pa.ArrowException, KeyError) as exc:  # pyarrow's errors for a damaged or foreign file
        raise ResultFileError(f"{what} ({str(exc).splitlines()[0]}); {_REWRITE}") from None
    checks = {"id": lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
              "position": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
              "text": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
              "number": pa.types.is_floating, "flag": pa.types.is_boolean}
    for name in columns:
        kind, column = types[name], table[name]
        if not checks[kind](column.type):
            raise ResultFileError(f"{what}: column {name!r} must hold {_EXPECTED[kind]}, got {column.type}; {_REWRITE}")
        if column.null_count and kind != "text":
            raise ResultFileError(f"{what}: column {name!r} has {column.null_count} missing value(s); {_REWRITE}")
        if kind == "position" and len(column) and not pc.all(pc.greater_equal(column, 1)).as_py():  # NaN fails too
            bad = next(v for v in column.to_pylist() if not v >= 1)
            raise ResultFileError(f"{what}: column {name!r} must hold {_EXPECTED[kind]}, got {bad}; {_REWRITE}")
    return table, schema


def markdown_cell(text: object) -> str:
    """``text`` for one cell of a markdown table: ``|`` escaped, a newline or other control
    character written as its escape (``\\n``), so the table keeps its rows and columns."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    return out.replace("|", "\\|")


_CHECKPOINT = "expected a checkpoint palr wrote (tensors and plain data, in torch's zip format)"


def read_checkpoint(file: str | Path, needs: tuple[str, ...] = ()) -> dict:
    """A checkpoint or saved model read with ``torch.load(weights_only=True)``: tensors and plain
    data only, so a crafted file cannot run code. An empty, truncated or damaged file, one holding
    anything else, or a dict without the keys in ``needs`` is refused with a :class:`ResultFileError`
    naming the file and what was expected."""
    import pickle

    import torch

    file = Path(file)
    try:
        if file.stat().st_size == 0:
            raise ResultFileError(f"{file} is empty; {_CHECKPOINT}")
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a type: the payload never ran
        why = str(exc).partition("WeightsUnpickler error:")[2].strip() or str(exc)  # past torch's advice
        raise ResultFileError(f"{file} holds something other than weights and plain data, and was not loaded "
                              f"(torch.load weights_only=True refused it: {_first_line(why)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:  # a torn or foreign file
        raise ResultFileError(f"{file} cannot be read, truncated or damaged? ({_first_line(exc)}); "
                              f"{_CHECKPOINT}") from None
    if not isinstance(state, dict):
        raise ResultFileError(f"{file} holds {type(state).__name__}; {_CHECKPOINT}, a dict")
    missing = [key for key in needs if key not in state]
    if missing:
        raise ResultFileError(f"{file} has no {', '.join(map(repr, missing))}; {_CHECKPOINT}")
    return state


def check_weights(file: str | Path, weights, module) -> None:
    """Every tensor in ``weights`` (a checkpoint's ``state_dict``, which may hold only some of the
    module's weights, as an adapter checkpoint does) names a weight of ``module`` with its shape;
    else a :class:`ResultFileError` naming the file and the first weight that does not fit."""
    import torch

    what = f"expected weights of this {type(module).__name__}"
    if not isinstance(weights, dict):
        raise ResultFileError(f"{file}: state_dict is {type(weights).__name__}, not a dict of tensors; {what}")
    own = module.state_dict()
    for key, tensor in weights.items():
        if key not in own:
            raise ResultFileError(f"{file}: weight {key!r} is not one of the model's; {what}")
        if not isinstance(tensor, torch.Tensor) or tensor.shape != own[key].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ResultFileError(f"{file}: weight {key!r} is {shape}, the model's is {tuple(own[key].shape)}; {what}")


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: bytes per element of each safetensors dtype
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
                "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_SAFETENSORS = "expected a safetensors file as palr writes them (a JSON header, then each tensor's bytes)"


def check_model_files(folder: str | Path) -> None:
    """Every ``*.safetensors`` file and every ``*.json`` beside one under ``folder`` (a LoRA adapter
    and its ``adapter_config.json``, a saved base model and its ``config.json``), checked before a
    library reads them: a safetensors header that is whole and describes exactly the bytes that
    follow, and JSON objects. Reads headers only, so it costs milliseconds; raises a
    :class:`ResultFileError` naming the file and what was expected."""
    for file in sorted(Path(folder).rglob("*.safetensors")):
        _check_safetensors(file)
        for config in sorted(file.parent.glob("*.json")):
            try:
                node = json.loads(config.read_bytes().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ResultFileError(f"{config}: not valid JSON ({_first_line(exc)}); expected the settings the "
                                      f"model beside it was saved with") from None
            if not isinstance(node, dict):
                raise ResultFileError(f"{config} holds {_json_type(node)}; expected a JSON object of settings")


def _check_safetensors(file: Path) -> None:
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise ResultFileError(f"{file}: its header is cut short ({size} bytes in all); {_SAFETENSORS}")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ResultFileError(f"{file}: its header is not JSON ({_first_line(exc)}); {_SAFETENSORS}") from None
    if not isinstance(header, dict):
        raise ResultFileError(f"{file}: its header is {_json_type(header)}; {_SAFETENSORS}")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = entry["data_offsets"]
            count = math.prod(entry["shape"])
            width = _DTYPE_BYTES[entry["dtype"]]
            assert isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop
        except (TypeError, KeyError, ValueError, AssertionError):
            raise ResultFileError(f"{file}: tensor {name!r} is described as {_shown(entry)}; {_SAFETENSORS}") from None
        if stop - begin != count * width:
            raise ResultFileError(f"{file}: tensor {name!r} has {stop - begin} bytes for {count} x {entry['dtype']}; "
                                  f"{_SAFETENSORS}")
        end = max(end, stop)
    if size != 8 + length + end:
        raise ResultFileError(f"{file} is {size} bytes, its header describes {8 + length + end} (truncated?); "
                              f"{_SAFETENSORS}")
