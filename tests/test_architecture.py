"""The shape of the code: one list per vocabulary, imports that run downhill."""

import ast
from pathlib import Path

import click

from survey_classifier.cli import main
from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.workers.queues import QUEUES

PACKAGE = Path(__file__).resolve().parents[1] / "survey_classifier"
#: Subpackage modules that are commands themselves (mounted on the main command line).
COMMAND_MODULES = {"cnn/cli.py", "som/cli.py", "anomaly/cli.py", "api/cli.py", "labels/cli.py"}


def _command(*path):
    command = main
    context = click.Context(main)
    for name in path:
        command = command.get_command(context, name)
    return command


def _choices(command, option):
    return next(p.type.choices for p in command.params if p.name == option)


def test_export_formats_come_from_one_list(engine):
    from survey_classifier.api import create_app

    assert sorted(_choices(_command("query"), "fmt")) == sorted(EXPORT_FORMATS)
    schema = create_app(engine=engine).openapi()["paths"]["/results"]["get"]["parameters"]
    enum = next(p["schema"]["enum"] for p in schema if p["name"] == "format")
    assert enum == ["json", *EXPORT_FORMATS]


def test_queues_come_from_one_list():
    from survey_classifier.workers.app import app

    assert tuple(_choices(_command("submit"), "queue")) == QUEUES
    assert tuple(_choices(_command("retry-failed"), "queue")) == QUEUES
    assert tuple(queue.name for queue in app.conf.task_queues) == QUEUES


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("_migrations/", "models/")):
            continue
        yield relative, path


def test_nothing_below_the_command_line_imports_it():
    for relative, path in _modules():
        if relative.startswith("cli/") or relative in COMMAND_MODULES:
            continue
        for module, _ in _imports(path):
            assert not module.startswith("survey_classifier.cli"), f"{relative} imports the command line ({module})"


def test_commands_use_only_the_shared_modules_of_the_command_line():
    for relative, path in _modules():
        for module, names in _imports(path):
            if module.startswith("survey_classifier.cli") and not relative.startswith("cli/"):
                assert module in ("survey_classifier.cli.options", "survey_classifier.cli.group"), (
                    f"{relative} imports {module}: subpackage commands use cli.options and cli.group only"
                )
            private = [name for name in names if name.startswith("_") and name != "__version__"]
            assert not (module.startswith("survey_classifier") and private), (
                f"{relative} imports private names {private} from {module}"
            )


def test_run_bookkeeping_does_not_import_the_pipeline():
    imported = {module for module, _ in _imports(PACKAGE / "runs.py")}
    assert "survey_classifier.pipeline" not in imported
