"""The `triage` command line. Every command has --help; exit code 0 means it did what it said."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from streams import config
from streams.client import json_text, visible
from streams.kafka_io import KafkaFailure
from streams.services import ServiceError
from streams import pipelines
from streams.errors import PipelineError
from streams.pipeline import Pipeline

app = typer.Typer(help="triage: an event-driven AI orchestrator for support tickets over Apache Kafka.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
kb_app = typer.Typer(help="Tenants' knowledge bases in Redis.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
dlq_app = typer.Typer(help="Dead-letter topics: the human queue. List, show, replay after a fix.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
drift_app = typer.Typer(help="The classifiers' drift monitors (their state is in `triage status`).", no_args_is_help=True)
app.add_typer(drift_app, name="drift")
err = Console(stderr=True)
out = Console()
# Everything printed here that came from data (records, headers, arguments, files, Redis) is printed as data:
# as a Text (never parsed as rich markup, so `[/x]` in a tenant id cannot crash a command) and through
# visible() (so an ESC or a newline in it cannot drive the operator's terminal or forge a line).


def _say(message: object) -> None:
    out.print(Text(visible(message)))


def _note(message: object) -> None:
    err.print(Text(visible(message)))


def _cell(value: object) -> Text:
    return Text(visible("" if value is None else value))


def _settings() -> config.Settings:
    settings = config.load()
    if settings.registry_url:
        # This process's producers and readers (produce, tail, demo) frame and resolve through the registry too.
        from streams import avro, schema_registry
        avro.use(schema_registry.for_settings(settings))
    return settings


def _fail(message: str, code: int = 1) -> None:
    err.print(Text.assemble(("error:", "red"), " ", visible(message)))
    raise typer.Exit(code)


PIPELINE_HELP = ("The pipeline: a shipped name (`triage pipelines`), module:attribute, or a .toml file. "
                 "Default: support.")


def _pipeline_option() -> object:
    return typer.Option(None, "--pipeline", envvar=pipelines.ENV, help=PIPELINE_HELP, show_envvar=True)


def _use(spec: Optional[str]) -> Pipeline:
    """Load and check the pipeline this command works on, and make it the process's (and its children's)."""
    try:
        pipeline = pipelines.load(spec)
    except PipelineError as exc:
        _fail(str(exc), 2)
    if spec:
        # A file is named by its absolute path: the workers the supervisor starts run in another folder.
        os.environ[pipelines.ENV] = str(Path(spec).resolve()) if spec.endswith(".toml") else spec
    return pipeline


def _known_step(pipeline: Pipeline, step: str) -> None:
    if step not in pipeline.step_names:
        _fail(f"unknown step {step!r}; steps of {pipeline.name}: {', '.join(pipeline.step_names)}", 2)


@app.command()
def up(services_only: bool = typer.Option(False, "--services-only", help="Start Kafka and Redis and create topics; no workers."),
       load_kb: bool = typer.Option(True, "--load-kb/--no-load-kb", help="Load the sample knowledge bases into Redis."),
       brokers: Optional[int] = typer.Option(None, "--brokers", min=1, max=9,
                                             help="Kafka nodes on loopback (3: replication 3, min.insync.replicas 2)."),
       replicas: int = typer.Option(1, "--replicas", min=1, help="Worker processes per step."),
       pipeline: Optional[str] = _pipeline_option()) -> None:
    """Start Kafka (KRaft), Redis, the offline model server, the topics and every step's worker, in the background."""
    import dataclasses

    from streams import stack
    _use(pipeline)
    s = _settings()
    try:
        stack.start_services(s, say=_say, brokers=brokers)
        s = dataclasses.replace(s, bootstrap=_settings().bootstrap)  # a new cluster has a new bootstrap
        if load_kb:
            loaded = stack.load_knowledge_bases(s)
            _say("kb         " + ", ".join(f"{t}: {n} docs" for t, n in loaded.items()))
        if not services_only:
            stack.start_workers(s, replicas=replicas, say=_say)
    except ServiceError as exc:
        _fail(str(exc))
    _say(f"state in {s.home}; stop everything with `triage down`")


@app.command()
def down() -> None:
    """Stop every worker, the model server, Redis and Kafka that `triage up` started. Leaves no process behind."""
    from streams import stack
    stopped = stack.down(_settings(), say=_say)
    if not stopped:
        _say("nothing was running")


@app.command()
def supervise() -> None:
    """Keep the workers `triage up` asked for alive, restarting any that die (what `triage up` runs in the background)."""
    from streams import supervisor
    from streams.context import configure_logging
    configure_logging()
    _use(None)
    supervisor.run(_settings())


@app.command()
def scale(step: str = typer.Argument(..., help="Step name (see `triage steps`)."),
          replicas: int = typer.Argument(..., min=0, help="Worker processes to keep for this step."),
          pipeline: Optional[str] = _pipeline_option()) -> None:
    """Run REPLICAS worker processes for STEP under the supervisor; they share the step's partitions."""
    from streams import supervisor
    _known_step(_use(pipeline), step)
    s = _settings()
    wanted = supervisor.desired_slots(s.home)
    wanted[step] = replicas
    supervisor.write_slots(s.home, wanted)
    _say(f"{step}: {replicas} worker(s) wanted; the supervisor applies it within a second")


@app.command()
def steps(pipeline: Optional[str] = _pipeline_option()) -> None:
    """List the step names (for `triage worker`)."""
    for s in _use(pipeline).step_names:
        _say(s)


@app.command()
def worker(names: list[str] = typer.Argument(..., help="Step names (see `triage steps`), or 'all'."),
           instance: Optional[str] = typer.Option(None, help="Stable name of this replica (default: TRIAGE_INSTANCE or host-pid)."),
           log_level: str = typer.Option("INFO", help="Log level."),
           metrics_port: int = typer.Option(0, envvar="TRIAGE_METRICS_PORT",
                                            help="Serve Prometheus /metrics on this port (0: off)."),
           pipeline: Optional[str] = _pipeline_option()) -> None:
    """Run steps in the foreground until SIGTERM/SIGINT; then drain in-flight records and exit."""
    from streams.context import configure_logging
    from streams.worker import run_steps
    known = _use(pipeline).step_names
    chosen = list(known) if names == ["all"] else names
    unknown = [n for n in chosen if n not in known]
    if unknown:
        _fail(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(known)}", 2)
    configure_logging(log_level)
    if metrics_port:
        from streams import metrics
        metrics.serve(metrics_port)
    from streams.schema_registry import RegistryUnavailable, SchemaIncompatible
    try:
        asyncio.run(run_steps(_settings(), chosen, instance=instance))
    except (SchemaIncompatible, RegistryUnavailable) as exc:
        _fail(f"{exc.code}: {exc}")


def _read_lines(source: str) -> list[tuple[int, str]]:
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            _fail(f"{source}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
    return [(i + 1, line) for i, line in enumerate(lines) if line.strip()]


@app.command()
def produce(source: str = typer.Argument(..., help="A JSON-lines file (tickets for support), or - for standard input."),
            as_json: bool = typer.Option(False, "--json", help="Send JSON (content-type: application/json) instead of Avro."),
            limit: Optional[int] = typer.Option(None, "--max", help="Send at most this many tickets."),
            pipeline: Optional[str] = _pipeline_option()) -> None:
    """Send JSON lines to the pipeline's input topic (tickets.in); one line per record ending with its correlation ID."""
    from streams.client import InputProducer, TicketProducer
    chosen = _use(pipeline)
    lines = _read_lines(source)
    s = _settings()
    # A pipeline whose input is the Ticket record takes Avro unless --json; any other takes the JSON objects.
    tickets = chosen.extras.get("input") == "ticket"
    p = (TicketProducer if tickets else InputProducer)(s.bootstrap, as_json=as_json or not tickets)
    bad = 0
    sent = 0
    for lineno, line in lines:
        if limit is not None and sent >= limit:
            break
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            _note(f"line {lineno}: skipped, not a JSON object: {exc}")
            bad += 1
            continue
        try:
            r = p.send(doc)
        except Exception as exc:  # noqa: BLE001 - Avro refuses wrong types: say which line and go on
            _note(f"line {lineno}: skipped: {exc} (send it with --json to have ingest dead-letter it)")
            bad += 1
            continue
        sent += 1
        print(f"sent\t{visible(r.tenant_id)}\t{visible(r.ticket_id or '-')}\t{visible(r.correlation_id)}", flush=True)
    p.flush()
    _note(f"{sent} {'tickets' if tickets else 'records'} sent to {chosen.input}"
          + (f", {bad} lines skipped" if bad else ""))
    if bad and not sent:
        raise typer.Exit(1)


@app.command()
def tail(topic: str = typer.Argument(..., help="Topic to read, e.g. tickets.responses."),
         max_records: Optional[int] = typer.Option(None, "--max", help="Stop after this many records."),
         timeout: float = typer.Option(10.0, "--timeout", help="Stop after this many seconds."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object per line (key, headers, value)."),
         latest: bool = typer.Option(False, "--latest", help="Only records that arrive from now on."),
         pipeline: Optional[str] = _pipeline_option()) -> None:
    """Print committed records of a topic (read_committed), from the beginning by default."""
    from streams.client import read
    known = _use(pipeline).all_topics()
    s = _settings()
    if topic not in known:
        err.print(Text.assemble(("note:", "yellow"), f" {visible(topic)} is not one of triage's topics"))
    n = 0
    for o in read(s.bootstrap, [topic], from_beginning=not latest, timeout=timeout, max_records=max_records):
        n += 1
        doc = o.as_json()
        if as_json:
            print(json_text(doc), flush=True)
        else:
            v = doc["value"]
            summary = v.get("reply") or v.get("escalation_reason") if isinstance(v, dict) else v
            print(f"{o.partition}/{o.offset}\t{visible(o.key)}\t{visible(o.headers.get('dlq.reason') or '')}"
                  f"\t{visible(str(summary)[:160])}", flush=True)
    _note(f"{n} records")


@kb_app.command("load")
def kb_load(directory: Optional[Path] = typer.Argument(None, help="Folder of <tenant>.jsonl files (default: the sample KBs).")) -> None:
    """Load knowledge bases into Redis, one tenant per file, each under its tenant's namespace."""
    from streams import stack
    try:
        loaded = stack.load_knowledge_bases(_settings(), directory)
    except ServiceError as exc:
        _fail(str(exc))
    for tenant, n in loaded.items():
        _say(f"{tenant}: {n} documents")


@dlq_app.command("list")
def dlq_list(step: Optional[str] = typer.Argument(None, help="Only this step's DLQ."),
             as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
             pipeline: Optional[str] = _pipeline_option()) -> None:
    """Dead letters by step and reason, with how many were replayed or answered by hand."""
    from rich.table import Table

    from streams import dlq
    chosen = _use(pipeline)
    s = _settings()
    if step is not None:
        _known_step(chosen, step)
    try:
        from streams.ledger import read_decisions
        table = dlq.summary(dlq.scan(s.bootstrap, [step] if step else None), read_decisions(s.bootstrap))
    except KafkaFailure as exc:
        _fail(str(exc))
    if as_json:
        print(json_text(table, indent=2))
        return
    t = Table(title="dead letters")
    for col in ("step", "reason", "count", "replayed", "answered"):
        t.add_column(col)
    for st, reasons in sorted(table.items()):
        for reason, c in sorted(reasons.items()):
            t.add_row(_cell(st), _cell(reason), _cell(c["count"]), _cell(c.get("replayed", 0)),
                      _cell(c.get("answered", 0)))
    out.print(t if table else Text("no dead letters"))


@dlq_app.command("show")
def dlq_show(ident: str = typer.Argument(..., help="A correlation ID, or topic/partition/offset."),
             pipeline: Optional[str] = _pipeline_option()) -> None:
    """Every dead letter of one ticket (or at one position): headers, reason and the original value."""
    from streams import dlq
    _use(pipeline)
    found = dlq.find(dlq.scan(_settings().bootstrap), ident)
    if not found:
        _fail(f"no dead letter with id or correlation ID {ident!r}")
    for d in found:
        print(json_text({"id": d.id, **d.out.as_json()}, indent=2))


@dlq_app.command("replay")
def dlq_replay(step: str = typer.Argument(..., help="The step whose dead letters to replay."),
               reason: Optional[str] = typer.Option(None, "--reason", help="Only entries with this dlq.reason code."),
               cid: Optional[str] = typer.Option(None, "--id", help="Only this entry (its id, topic/partition/offset, as "
                                                 "`triage dlq show` and the queue page show it) or every entry of this "
                                                 "correlation ID (which two tenants may share: use the entry id)."),
               dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be replayed; send nothing."),
               pipeline: Optional[str] = _pipeline_option()) -> None:
    """Send dead letters back into the step that failed, as a new attempt. Each entry is replayed once, ever."""
    from rich.progress import Progress

    from streams import dlq
    _known_step(_use(pipeline), step)
    s = _settings()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"replaying {step}", total=None)
        by_entry = cid is not None and dlq.is_entry_id(cid)
        try:
            report = dlq.replay(s.bootstrap, step, reason=reason, entry_id=cid if by_entry else None,
                                correlation_id=None if by_entry else cid, dry_run=dry_run,
                                progress=lambda n, total: bar.update(task, completed=n, total=total))
        except KafkaFailure as exc:
            _fail(f"nothing replayed: {exc}")
    verb = "would replay" if dry_run else "replayed"
    _say(f"{report.selected} selected, {verb} {len(report.ids) if dry_run else report.replayed}, "
              f"{report.already} already replayed before"
              + (f", {report.answered} answered by hand (never replayed)" if report.answered else "")
              + (f", {report.truncated} kept only in part (too big; the whole record is at its dlq.source)"
                 if report.truncated else ""))
    if dry_run:
        for i in report.ids:
            print(visible(i))


@drift_app.command("reset")
def drift_reset(classifiers: Optional[list[str]] = typer.Argument(None, help="Classifiers to reset (default: all).")) -> None:
    """Forget the baseline of drift monitors, so they learn it again from the next results: for a change that is
    the new normal (a model upgraded, a tenant with another mix of languages), which keeps a monitor tripped."""
    import asyncio

    from streams.drift import reset
    from streams.tenant_state import connect
    CLASSIFIERS = tuple(_use(None).extras.get("classifiers", ()))

    chosen = list(classifiers or CLASSIFIERS)
    unknown = [c for c in chosen if c not in CLASSIFIERS]
    if unknown:
        _fail(f"unknown classifier {', '.join(unknown)}; classifiers: {', '.join(CLASSIFIERS)}", 2)

    async def run() -> dict[str, int]:
        r = connect(_settings().redis_url)
        try:
            return {c: await reset(r, c) for c in chosen}
        finally:
            await r.aclose()
    try:
        done = asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - Redis away: say so, do not print a traceback
        _fail(f"redis unavailable: {exc}")
    for c, n in done.items():
        _say(f"{c}: baseline forgotten ({n} keys); it is learnt again from the next results")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           pipeline: Optional[str] = _pipeline_option()) -> None:
    """Processes, consumer lag per step and depth of every terminal topic."""
    from streams.status import collect, render
    _use(pipeline)
    doc = collect(_settings())
    if as_json:
        print(json_text(doc, indent=2))
    else:
        render(doc, out)


@app.command()
def ui(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
       port: int = typer.Option(8780, help="Port to listen on."),
       tokens_file: Optional[Path] = typer.Option(
           None, "--tokens-file", envvar="TRIAGE_UI_TOKENS_FILE",
           help="File of the agents' tokens, mode 600: JSON {\"tenant\": \"token\"} or tenant:token lines. Or set "
                "TRIAGE_UI_TOKENS to tenant:token pairs. Default: generated, saved under TRIAGE_HOME."),
       tokens: Optional[str] = typer.Option(None, "--tokens", hidden=True,
                                            help="Refused: a token on the command line is shown by `ps`."),
       pipeline: Optional[str] = _pipeline_option()) -> None:
    """The human queue for support agents: escalations and dead letters of their tenant; answer or replay."""
    import secrets

    from streams.ui import serve
    from streams.ui.auth import Auth, TokenSourceError, load_tokens, parse_tokens, save_tokens
    if tokens is not None:
        # Not even for a moment: every user of the machine reads a process's arguments (ps, /proc/<pid>/cmdline).
        _fail("--tokens is no longer accepted: a token on the command line is visible to every user of this "
              "machine in `ps`. Put the tokens in a file only you can read (`--tokens-file PATH`, mode 600) or "
              "in the environment (TRIAGE_UI_TOKENS=tenant:token,...).", code=2)
    _use(pipeline)
    s = _settings()
    try:
        if tokens_file is not None:
            pairs = load_tokens(tokens_file)
        elif os.environ.get("TRIAGE_UI_TOKENS"):
            pairs = parse_tokens(os.environ["TRIAGE_UI_TOKENS"], "TRIAGE_UI_TOKENS")
        else:
            path = s.home / "ui-tokens.json"
            if path.exists():
                pairs = load_tokens(path)
            else:
                pairs = {t: secrets.token_urlsafe(18) for t in s.tenants}
                save_tokens(path, pairs)
            out.print(f"agent tokens per tenant are in {path} (readable by you only)", markup=False)
    except TokenSourceError as exc:
        _fail(str(exc), code=2)
    try:
        Auth(pairs)  # the same checks the page makes, before anything starts
    except ValueError as exc:
        _fail(str(exc), code=2)
    out.print(f"human queue on http://{host}:{port}/", markup=False)
    serve(s, host, port, pairs)


@app.command("trace")
def trace_cmd(correlation_id: str = typer.Argument(..., help="The ticket's correlation ID."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
              pipeline: Optional[str] = _pipeline_option()) -> None:
    """One ticket's path through the steps: timings, classifications, model calls and outcome."""
    from rich.table import Table

    from streams.trace import trace
    _use(pipeline)
    doc = trace(_settings().bootstrap, correlation_id)
    if as_json:
        print(json_text(doc, indent=2))
        return
    if not doc["found"]:
        _fail(f"no record with correlation ID {correlation_id!r}")
    t = Table(title=_cell(f"{correlation_id}: {doc['elapsed_ms']} ms, {doc['model_calls']} model calls, "
                          f"{doc['tokens']} tokens"))
    for col in ("+ms", "topic", "attempt", "what"):
        t.add_column(col)
    for h in doc["hops"]:
        t.add_row(_cell(h["t_ms"]), _cell(h["topic"]), _cell(h["attempt"]), _cell(h["what"]))
    out.print(t)
    o = doc["outcome"]
    _say(f"outcome: {o['topic']} (attempt {o['attempt']}" + (f", {o['reason']})" if o.get("reason") else ")")
         if o else "outcome: none yet (still in flight?)")


@app.command()
def demo(count: Optional[int] = typer.Option(None, "--count", help="Send only the first N sample tickets."),
         timeout: float = typer.Option(600.0, help="Give up waiting after this many seconds."),
         keep: bool = typer.Option(False, "--keep", help="Leave everything running afterwards."),
         pipeline: Optional[str] = _pipeline_option()) -> None:
    """Start everything, send the sample tickets, wait until each reached a terminal topic, summarise, stop."""
    from streams.demo import run_demo
    _use(pipeline)
    code = run_demo(_settings(), count=count, timeout=timeout, keep=keep, console=out)
    raise typer.Exit(code)


@app.command("pipelines")
def pipelines_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The shipped pipelines: name, input topic, steps and terminal topics."""
    from rich.table import Table
    rows = []
    for name in pipelines.shipped():
        try:
            p = pipelines.load(name)
        except PipelineError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append({"name": p.name, "input": p.input, "steps": list(p.step_names), "outcomes": list(p.outcomes),
                     "dead_letters": p.dlq_topic("<step>"), "about": p.describe})
    if as_json:
        print(json_text(rows, indent=2))
        return
    t = Table(title="pipelines")
    for col in ("name", "input", "steps", "terminal topics"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(_cell(r["name"]), _cell("-"), _cell(r["error"]), _cell("-"))
        else:
            t.add_row(_cell(r["name"]), _cell(r["input"]), _cell(", ".join(r["steps"])),
                      _cell(", ".join([*r["outcomes"], r["dead_letters"]])))
    out.print(t)


@app.command()
def check(spec: str = typer.Argument(..., metavar="PIPELINE",
                                     help="A shipped name, module:attribute, or a path to a .toml file.")) -> None:
    """Load a pipeline declaration and check it without running anything; exit 2 naming every problem."""
    try:
        p = pipelines.load(spec)  # only loaded, not made the process's: nothing runs
    except PipelineError as exc:
        _fail(str(exc), 2)
    _say(f"{p.name}: {len(p.steps)} steps, input {p.input}, outcomes {', '.join(p.outcomes)}; OK")


@app.command()
def render(target: str = typer.Argument(..., metavar="compose|k8s", help="What to write: the docker-compose file, or the Kubernetes manifests."),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder to write into (default: deploy/compose or deploy/k8s; deploy/<pipeline>/... for another pipeline)."),
           pipeline: Optional[str] = _pipeline_option()) -> None:
    """Write a pipeline's deploy files from its declaration: a worker per step, its topics, KEDA scaling per group."""
    from streams import render as rendering
    if target not in {t.value for t in rendering.Target}:
        _fail(f"render what? {target!r}: choose compose or k8s", 2)
    chosen, settings = _use(pipeline), _settings()
    try:
        written = rendering.write(rendering.Target(target), chosen, out_dir, spec=pipeline or chosen.name,
                                  partitions=settings.partitions, tenants=settings.tenants)
    except PipelineError as exc:
        _fail(str(exc), 2)
    for path in written:
        _say(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
