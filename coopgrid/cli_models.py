"""``coopgrid models publish``: publish one's own ONNX model, with the manifest the workers feed it by."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from coopgrid.cli import DEFAULT_URL, Coordinator, TokenOpt, _client, console, fail, models_app


def _json_option(flag: str, text: str | None, kind: type) -> Any:
    if text is None:
        return kind()
    candidate = Path(text)
    try:
        if not text.lstrip().startswith(("{", "[")) and candidate.is_file():
            text = candidate.read_text()
        value = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"{flag} takes JSON (or a JSON file): {exc}")
    if not isinstance(value, kind):
        fail(f"{flag} takes a JSON {'object' if kind is dict else 'list'}, not {type(value).__name__}")
    return value


@models_app.command("publish")
def models_publish(
    file: Annotated[Path, typer.Argument(help="The ONNX file.", exists=True, dir_okay=False, readable=True)],
    task_type: Annotated[str, typer.Option(help="The task type the model is for: classify, embed, ...")],
    name: Annotated[str, typer.Option(help="Model name (letters, digits, _ . -); versions count up per name.")],
    input_spec: Annotated[
        str | None,
        typer.Option("--input", help='The input manifest as JSON or a JSON file, e.g. {"shape": [3, 224, 224], '
                                     '"layout": "NCHW", "mean": [...], "std": [...]} (see docs/task-types.md).'),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help='Class labels as a JSON list or a JSON file, e.g. ["cat", "dog"].')
    ] = None,
    framework: Annotated[str, typer.Option(help="What it was made with (informative).")] = "",
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Publish an ONNX model file to the coordinator's registry (workers fetch it by its sha256)."""
    from coopgrid import tasks

    installed = sorted(tasks.available())
    if task_type not in installed:
        fail(f"--task-type {task_type!r} is not a task type; installed: {', '.join(installed)}")
    onnx = file.read_bytes()
    if not onnx:
        fail(f"{file} is empty")
    spec = {
        "name": name, "task_type": task_type, "input": _json_option("--input", input_spec, dict),
        "classes": _json_option("--classes", classes, list), "metrics": {}, "framework": framework,
    }
    with _client(coordinator, token) as client:
        published = client.publish_model(onnx, spec)
    console.print(
        f"published {escape(published['name'])}:{published['version']} ({len(onnx):,} bytes) sha256 {published['hash']}",
        highlight=False,
    )
