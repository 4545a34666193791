"""The dashboard's pages: :class:`Dashboard` (login, flows, runs, heartbeats, WASM modules and
the routes to them) and :func:`mount_dashboard`, which mounts it on the app.

Standard library only at module level; Starlette loads in :func:`mount_dashboard`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from active_data_flow.handlers.dead_letters import (
    DeadLetterError,
    describe_replay,
    letters_of,
    replay_run_dead_letters,
    run_directory,
)
from active_data_flow.handlers.schedule.store import (
    ACTIVE_RUN_STATUSES,
    RUN_STATUSES,
    FlowValidationError,
    NotFoundError,
    RunRecord,
    ScheduleStore,
    flow_problems,
)
from active_data_flow.handlers.security import FailureThrottle, client_ip, token_ok, unstorable
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.dashboard.base import (
    STATIC,
    Ctx,
    DashboardBase,
    PageNotFound,
    PageUnavailable,
    SecurityHeaders,
)
from active_data_flow.handlers.web.dashboard.charts import CHART_RUNS, run_chart
from active_data_flow.handlers.web.dashboard.format import human_size, letter_view, wait_text
from active_data_flow.handlers.web.dashboard.forms import (
    UPLOAD_LIMIT,
    format_configuration,
    module_id_from_filename,
    parse_configuration,
    parse_schedule,
    schema_problems,
)
from active_data_flow.handlers.web.dashboard.progress import run_progress
from active_data_flow.handlers.web.dashboard.sessions import SESSION_COOKIE, Session, safe_next
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import mask, unmask
from active_data_flow.spec import flow_secret_keys

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from active_data_flow.wasm.registry import ModuleRecord, ModuleRegistry

_log = get_logger("web.dashboard")

#: where the dashboard is mounted
PREFIX = "/ui"
#: dead letters listed on a run page (all of them: the API, or `adf dead-letters show`)
LETTERS_SHOWN = 200
#: runs in a flow page's table of recent runs
RECENT_RUNS = 10


class Dashboard(DashboardBase):
    """The pages (each takes a :class:`~active_data_flow.handlers.web.dashboard.base.Ctx` and returns a
    response) and :meth:`asgi_app`, the Starlette app that routes to them."""

    # -- login -------------------------------------------------------------------------

    def _client(self, ctx: Ctx) -> str:
        peer = ctx.request.client.host if ctx.request.client else None
        headers = {k.lower(): v for k, v in ctx.request.headers.items()}
        try:
            return client_ip(peer, headers, self.settings.trusted_proxies) or "unknown"
        except ValueError:
            return peer or "unknown"

    def login_form(self, ctx: Ctx) -> Response:
        target = safe_next(ctx.query("next"), ctx.base)
        if ctx.session is not None and ctx.session.user:
            return self.redirect(target)
        session = ctx.session or Session.new(user=False)
        ctx.session = session
        notice = "You are logged out." if ctx.query("logged_out") else None
        response = self.render(ctx, "login.html", next=target, error=None, notice=notice,
                               enabled=bool(self.settings.api_token))
        self.set_session(ctx, response, session)
        return response

    def login_submit(self, ctx: Ctx) -> Response:
        target = safe_next(ctx.form.get("next"), ctx.base)
        if not self.settings.api_token:
            return self.render(ctx, "login.html", 503, next=target, notice=None, enabled=False,
                               error="Login is disabled: set ADF_API_TOKEN to use the dashboard.")
        client = self._client(ctx)
        # The token first: the right one always logs in, however many wrong ones came from
        # this address (someone else's guesses must not lock its owner out).
        if not token_ok(ctx.form.get("token"), self.settings.api_token):
            wait = self.throttle.retry_after(client)
            self.throttle.failed(client)
            if wait is not None:
                log_event(_log, "dashboard login throttled", logging.WARNING, client=client, retry_after=wait)
                response = self.render(
                    ctx, "login.html", 429, next=target, notice=None, enabled=True,
                    error=f"Too many failed logins from {client}; try again in {wait_text(wait)}.")
                response.headers["retry-after"] = str(wait)
                return response
            log_event(_log, "dashboard login failed", logging.WARNING, client=client)
            return self.render(ctx, "login.html", 401, next=target, notice=None, enabled=True,
                               error="Wrong token.")
        session = Session.new(user=True)  # a new id and CSRF token: nothing carries over from before the login
        log_event(_log, "dashboard login", client=client)
        response = self.redirect(target)
        self.set_session(ctx, response, session)
        return response

    def logout(self, ctx: Ctx) -> Response:
        if ctx.session is not None:
            self.revoke(ctx.session)
        response = self.redirect(f"{ctx.base}/login?logged_out=1")
        response.delete_cookie(SESSION_COOKIE, path=ctx.base or "/")
        return response

    # -- flows -------------------------------------------------------------------------

    def _flow(self, name: str) -> Any:
        try:
            return self.store.get_flow(name)
        except NotFoundError:
            raise PageNotFound(f"There is no flow named {name!r}.") from None

    def home(self, ctx: Ctx) -> Response:
        return self.redirect(f"{ctx.base}/flows")

    def flows(self, ctx: Ctx) -> Response:
        return self.render(ctx, "flows.html", flows=self.store.list_flows(), nav="flows")

    def _flow_page(self, ctx: Ctx, flow: Any, *, status: int = 200, fmt: str | None = None, text: str | None = None,
                   interval: str | None = None, description: str | None = None,
                   problems: list[str] | None = None, cron: str | None = None,
                   timezone: str | None = None) -> Response:
        fmt = fmt if fmt in ("json", "yaml") else ("yaml" if ctx.query("format") == "yaml" else "json")
        shown = mask(flow.configuration, flow_secret_keys(flow.configuration))
        return self.render(
            ctx, "flow.html", status, nav="flows", flow=flow, fmt=fmt, masked=shown != flow.configuration,
            text=text if text is not None else format_configuration(shown, fmt),
            interval=interval if interval is not None else ("" if flow.run_interval is None else str(flow.run_interval)),
            cron=cron if cron is not None else (flow.schedule_cron or ""),
            timezone=timezone if timezone is not None else (flow.schedule_timezone or ""),
            description=description if description is not None else flow.description,
            problems=problems or [], **self._recent_runs(flow.name),
            mode=self.settings.heartbeat_mode,
        )

    def _recent_runs(self, name: str) -> dict[str, Any]:
        """A flow page's runs: the newest in the table, the last CHART_RUNS in the chart."""
        recent = self.store.list_runs(flow=name, limit=CHART_RUNS)
        return {"runs": recent[:RECENT_RUNS], "chart": run_chart(recent)}

    def flow(self, ctx: Ctx) -> Response:
        return self._flow_page(ctx, self._flow(ctx.params["name"]))

    def _read_flow_form(self, ctx: Ctx, name: str | None,
                        stored: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
        """The form's values and every problem with them; ``stored`` is the configuration the
        editor showed masked (None for a new flow)."""
        form = ctx.form
        fmt = form.get("format") if form.get("format") in ("json", "yaml") else "json"
        configuration, problems = parse_configuration(form.get("configuration"), fmt)
        interval, schedule, interval_problems = parse_schedule(
            form.get("run_interval"), form.get("schedule_cron"), form.get("schedule_timezone"))
        problems += interval_problems
        values = {"configuration": configuration, "run_interval": interval, "description": form.get("description"),
                  "schedule": schedule}
        problems += unstorable(values["description"], "description")
        if configuration is not None:
            problems += unstorable(configuration, "configuration")
        mismatched = False
        if configuration is not None and not problems:
            values["configuration"], masked = unmask(configuration, stored, flow_secret_keys(stored))
            problems += [f"configuration.{p}" for p in masked]
            if not masked:  # the flow schema first, as the API does: its problems say where
                found = schema_problems(values["configuration"], name)
                problems += found
                mismatched = bool(found)
        if problems:
            # report the fields that could be read as well, all at once
            check = [k for k in ("configuration", "run_interval") if values[k] is not None
                     and not (k == "configuration" and mismatched)]
            if name is not None:
                check.append("name")
            problems += flow_problems(name, configuration, interval, description=values["description"],
                                      schedule=schedule, check=check)
        return values, list(dict.fromkeys(problems))

    def flow_save(self, ctx: Ctx) -> Response:
        flow = self._flow(ctx.params["name"])
        values, problems = self._read_flow_form(ctx, flow.name, flow.configuration)
        if not problems:
            try:
                self.store.update_flow(flow.name, **values)
            except FlowValidationError as exc:
                problems = exc.problems
            except NotFoundError:
                raise PageNotFound(f"There is no flow named {flow.name!r}.") from None
        if problems:
            return self._flow_page(
                ctx, flow, status=422, fmt=ctx.form.get("format"), text=ctx.form.get("configuration"),
                interval=ctx.form.get("run_interval"), description=ctx.form.get("description"), problems=problems,
                cron=ctx.form.get("schedule_cron"), timezone=ctx.form.get("schedule_timezone"),
            )
        log_event(_log, "flow changed from the dashboard", flow=flow.name)
        fmt = "yaml" if ctx.form.get("format") == "yaml" else "json"
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(flow.name)}?format={fmt}"),
                          "Configuration saved; it applies from the next run.")

    def flow_enabled(self, ctx: Ctx, enabled: bool) -> Response:
        name = self._flow(ctx.params["name"]).name
        self.store.update_flow(name, enabled=enabled)
        log_event(_log, "flow enabled" if enabled else "flow disabled", flow=name, via="dashboard")
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(name)}"),
                          f"Flow {name} {'enabled' if enabled else 'disabled'}.")

    def flow_trigger(self, ctx: Ctx) -> Response:
        from starlette.background import BackgroundTask

        from active_data_flow.handlers import scheduler

        name = self._flow(ctx.params["name"]).name
        if self.settings.heartbeat_mode == "async":
            run = self.store.create_run(name, trigger="manual")
            log_event(_log, "run enqueued from the dashboard", run=run.id, flow=name)
            return self.flash(ctx, self.redirect(f"{ctx.base}/runs/{run.id}"),
                              f"Run #{run.id} of {name} is pending: an `adf worker` will run it.")
        worker_id = scheduler.default_worker_id("manual")
        run = self.store.create_run(name, trigger="manual", worker_id=worker_id,
                                    lease_seconds=self.settings.lease_seconds)
        log_event(_log, "run started from the dashboard", run=run.id, flow=name)
        task = BackgroundTask(self._execute, run, worker_id)
        return self.flash(ctx, self.redirect(f"{ctx.base}/runs/{run.id}", background=task),
                          f"Run #{run.id} of {name} started.")

    def _execute(self, run: Any, worker_id: str) -> None:
        from active_data_flow.handlers import scheduler

        try:
            scheduler.execute_run(self.store, run, self.settings, worker_id=worker_id)
        except Exception as exc:  # execute_run records failures itself; this is a store outage
            _log.error("dashboard run failed", exc_info=exc, extra={"fields": {"run": run.id}})

    def flow_new(self, ctx: Ctx) -> Response:
        example = {"source": {"type": "memory", "records": [{"id": 1}]}, "sink": {"type": "memory"}}
        fmt = "yaml" if ctx.query("format") == "yaml" else "json"
        return self.render(ctx, "flow_new.html", nav="flows", fmt=fmt, name="", interval="60", description="",
                           cron="", timezone="UTC",
                           text=format_configuration(example, fmt), problems=[])

    def flow_create(self, ctx: Ctx) -> Response:
        name = ctx.form.get("name").strip()
        values, problems = self._read_flow_form(ctx, name)
        if not problems:
            try:
                self.store.create_flow(name, values["configuration"], values["run_interval"],
                                       description=values["description"], enabled=ctx.form.get("enabled") == "on",
                                       schedule=values["schedule"])
            except FlowValidationError as exc:
                problems = exc.problems
        if problems:
            fmt = ctx.form.get("format") if ctx.form.get("format") in ("json", "yaml") else "json"
            return self.render(ctx, "flow_new.html", 422, nav="flows", fmt=fmt, name=name,
                               interval=ctx.form.get("run_interval"), description=ctx.form.get("description"),
                               text=ctx.form.get("configuration"), problems=problems,
                               cron=ctx.form.get("schedule_cron"), timezone=ctx.form.get("schedule_timezone"))
        log_event(_log, "flow created from the dashboard", flow=name)
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(name)}"), f"Flow {name} created.")

    # -- runs and heartbeats ------------------------------------------------------------

    def runs(self, ctx: Ctx) -> Response:
        flow = ctx.query("flow") or None
        status = ctx.query("status") or None
        if status not in (None, *RUN_STATUSES):
            status = None
        page_text = ctx.query("page", "1")
        page = max(int(page_text), 1) if page_text.isdigit() else 1
        size = 50
        runs = self.store.list_runs(flow=flow, status=status, limit=size + 1, offset=(page - 1) * size)
        more = len(runs) > size
        runs = runs[:size]
        filters = {k: v for k, v in (("flow", flow), ("status", status)) if v}
        return self.render(
            ctx, "runs.html", nav="runs", runs=runs, flow=flow or "", status=status or "", page=page, more=more,
            flows=[f.name for f in self.store.list_flows()],
            prev_query=urlencode({**filters, "page": page - 1}), next_query=urlencode({**filters, "page": page + 1}),
            refresh=any(r.status in ("pending", "in_progress") for r in runs),
        )

    def run(self, ctx: Ctx) -> Response:
        run_id = ctx.params["run_id"]
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            raise PageNotFound(f"There is no run #{run_id}.") from None
        # while the run goes on, dashboard.js polls run_progress_json (a meta refresh without scripts)
        return self.render(ctx, "run.html", nav="runs", run=run,
                           refresh="script" if run.status in ACTIVE_RUN_STATUSES else False,
                           progress=run_progress(run), letters=self._dead_letters(run))

    def run_progress_json(self, ctx: Ctx) -> Response:
        from starlette.responses import JSONResponse

        run_id = ctx.params["run_id"]
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            raise PageNotFound(f"There is no run #{run_id}.") from None
        return JSONResponse(run_progress(run))

    def _dead_letters(self, run: RunRecord) -> dict[str, Any] | None:
        """The run page's dead-letter section: None when the run has no run directory, or
        nothing to show (no dead letters now, none before, no replay)."""
        directory = run_directory(self.store, run, self.settings)
        if directory is None:
            return None
        summary = directory.summary()
        replays = [r for r in summary.get("replays") or [] if isinstance(r, Mapping)]
        problem: str | None = None
        letters: list[dict[str, Any]] = []
        total = 0
        try:
            letters, total = letters_of(directory, run, limit=LETTERS_SHOWN)
        except DeadLetterError as exc:
            problem = str(exc)
        if not letters and not replays and not problem and not run.dead_letters:
            return None
        ref = f"{run.flow_name}/{directory.run_id}"
        return {
            "shown": [letter_view(letter) for letter in letters],
            "total": total,
            "more": max(total - LETTERS_SHOWN, 0),
            "replays": list(reversed(replays)),
            "problem": problem,
            "finished": run.status not in ACTIVE_RUN_STATUSES,
            "show_command": f"adf dead-letters show {ref} --state-dir {directory.state_root}",
        }

    def run_replay(self, ctx: Ctx) -> Response:
        run_id = ctx.params["run_id"]
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            raise PageNotFound(f"There is no run #{run_id}.") from None
        url = f"{ctx.base}/runs/{run.id}#dead-letters"
        try:
            outcome = replay_run_dead_letters(self.store, run, self.settings)
        except DeadLetterError as exc:
            log_event(_log, "dead-letter replay refused", logging.WARNING, run=run.id, status=exc.status,
                      error=str(exc))
            return self.flash(ctx, self.redirect(url), f"Not replayed: {exc}", "error")
        return self.flash(ctx, self.redirect(url), describe_replay(outcome), "ok" if not outcome["remaining"] else "info")

    def heartbeats(self, ctx: Ctx) -> Response:
        limit_text = ctx.query("limit", "200")
        limit = min(max(int(limit_text), 1), 1000) if limit_text.isdigit() else 200
        return self.render(ctx, "heartbeats.html", nav="heartbeats", beats=self.store.list_heartbeats(limit=limit),
                           limit=limit, path_hb=self.settings.heartbeat_path)

    # -- WASM modules --------------------------------------------------------------------

    def _open_registry(self) -> ModuleRegistry:
        try:
            return self.registry()
        except Exception as exc:
            log_event(_log, "the wasm registry is unavailable", logging.ERROR, error=str(exc))
            raise PageUnavailable(f"The WASM module registry cannot be opened: {exc}") from exc

    def _modules_page(self, ctx: Ctx, registry: ModuleRegistry, *, status: int = 200,
                      upload: Mapping[str, str] | None = None, problems: list[str] | None = None) -> Response:
        modules: list[ModuleRecord] = []
        for latest in registry.list():
            modules.extend(reversed(registry.versions(latest.id)))
        return self.render(ctx, "modules.html", status, nav="modules", modules=modules, upload=upload or {},
                           problems=problems or [], limit=human_size(UPLOAD_LIMIT),
                           require_signature=registry.require_signature)

    def modules(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self._modules_page(ctx, registry)

    def module_upload(self, ctx: Ctx) -> Response:
        from active_data_flow.errors import MissingExtraError
        from active_data_flow.wasm.errors import SignatureError

        registry = self._open_registry()
        form = ctx.form
        module = form.files.get("module")
        module_id = form.get("id").strip() or (module_id_from_filename(module.filename) if module else "")
        version = form.get("version").strip()
        permissions = [line.strip() for line in form.get("permissions").splitlines() if line.strip()]
        author = form.get("author").strip() or None
        signature = form.files.get("signature")
        problems: list[str] = []
        if module is None or not module.data:
            problems.append("choose a .wasm file (drop it on the drop zone or use the file picker)")
        if not module_id:
            problems.append("module id: is required")
        if not version:
            problems.append("version: is required (a semantic version, e.g. 1.0.0)")
        record = None
        if not problems and module is not None:
            try:
                record = registry.upload(
                    module_id, version, module.data, permissions=permissions, author=author,
                    signature=signature.data if signature is not None and signature.data else None,
                    description=form.get("description").strip(),
                )
            except (ValueError, SignatureError, MissingExtraError) as exc:
                problems.append(str(exc))
        if record is None:
            if ctx.wants_json:
                from starlette.responses import JSONResponse

                return JSONResponse({"error": "; ".join(problems), "problems": problems}, status_code=422)
            values = {"id": module_id, "version": version, "permissions": form.get("permissions"),
                      "description": form.get("description"), "author": form.get("author")}
            return self._modules_page(ctx, registry, status=422, upload=values, problems=problems)
        log_event(_log, "wasm module uploaded from the dashboard", ref=record.ref, size=record.size)
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        message = f"Uploaded {record.ref} ({human_size(record.size)})."
        if ctx.wants_json:
            from starlette.responses import JSONResponse

            return self.flash(ctx, JSONResponse({"ok": True, "ref": record.ref, "redirect": url}), message)
        return self.flash(ctx, self.redirect(url), message)

    def _module(self, registry: ModuleRegistry, ctx: Ctx) -> ModuleRecord:
        from active_data_flow.wasm.errors import ModuleNotFoundInRegistry

        ref = f"{ctx.params['module_id']}@{ctx.params['version']}"
        try:
            return registry.get(ref)
        except (ModuleNotFoundInRegistry, ValueError):
            raise PageNotFound(f"There is no module {ref} in the registry.") from None

    def _module_page(self, ctx: Ctx, registry: ModuleRegistry, record: ModuleRecord, *, status: int = 200,
                     permission: str = "", permission_error: str | None = None) -> Response:
        changes = [e for e in registry.audit_log(module_id=record.id, event="permissions_changed", limit=50)
                   if e.get("resource") == record.ref][:10]
        return self.render(
            ctx, "module.html", status, nav="modules", module=record, versions=registry.versions(record.id),
            stats=registry.stats(record.ref), all_stats=registry.stats(record.id),
            executions=registry.query(module_id=record.ref, limit=20), changes=changes,
            permission=permission, permission_error=permission_error,
        )

    def module(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self._module_page(ctx, registry, self._module(registry, ctx))

    def permission_add(self, ctx: Ctx) -> Response:
        from active_data_flow.wasm.permissions import Permission

        registry = self._open_registry()
        record = self._module(registry, ctx)
        text = ctx.form.get("permission").strip()
        try:
            if not text:
                raise ValueError("enter a permission such as http:read:https://api.example.com/*")
            permission = str(Permission.parse(text))
        except ValueError as exc:
            return self._module_page(ctx, registry, record, status=422, permission=text, permission_error=str(exc))
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        current = record.permissions.to_list()
        if permission in current:
            return self.flash(ctx, self.redirect(url), f"{record.ref} already has {permission}.", "info")
        registry.set_permissions(record.ref, [*current, permission])
        log_event(_log, "wasm permission added from the dashboard", ref=record.ref, permission=permission)
        return self.flash(ctx, self.redirect(url), f"Granted {permission} to {record.ref}.")

    def permission_remove(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        record = self._module(registry, ctx)
        permission = ctx.form.get("permission").strip()
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        current = record.permissions.to_list()
        if permission not in current:
            return self.flash(ctx, self.redirect(url), f"{record.ref} does not have {permission!r}.", "error")
        registry.set_permissions(record.ref, [p for p in current if p != permission])
        log_event(_log, "wasm permission removed from the dashboard", ref=record.ref, permission=permission)
        return self.flash(ctx, self.redirect(url), f"Revoked {permission} from {record.ref}.")

    def module_delete_confirm(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self.render(ctx, "module_delete.html", nav="modules", module=self._module(registry, ctx))

    def module_delete(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        record = self._module(registry, ctx)
        if ctx.form.get("confirm") != "yes":
            return self.redirect(f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}/delete")
        registry.delete(record.ref)
        log_event(_log, "wasm module deleted from the dashboard", ref=record.ref)
        return self.flash(ctx, self.redirect(f"{ctx.base}/modules"), f"Deleted {record.ref}.")

    def not_found(self, ctx: Ctx) -> Response:
        return self.error_page(ctx, 404, "Not found", f"There is no dashboard page at {ctx.request.url.path}.")

    # -- the ASGI app ------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        get, post = ["GET", "HEAD"], ["POST"]
        module = "/modules/{module_id}/{version}"
        routes = [
            Route("/", self.page(self.home), methods=get),
            Route("/login", self.page(self.login_form, auth=False), methods=get),
            Route("/login", self.page(self.login_submit, auth=False), methods=post),
            Route("/logout", self.page(self.logout), methods=post),
            Route("/flows", self.page(self.flows), methods=get),
            Route("/new-flow", self.page(self.flow_new), methods=get),
            Route("/new-flow", self.page(self.flow_create), methods=post),
            Route("/flows/{name}", self.page(self.flow), methods=get),
            Route("/flows/{name}/configuration", self.page(self.flow_save), methods=post),
            Route("/flows/{name}/enable", self.page(lambda ctx: self.flow_enabled(ctx, True)), methods=post),
            Route("/flows/{name}/disable", self.page(lambda ctx: self.flow_enabled(ctx, False)), methods=post),
            Route("/flows/{name}/trigger", self.page(self.flow_trigger), methods=post),
            Route("/runs", self.page(self.runs), methods=get),
            Route("/runs/{run_id:int}", self.page(self.run), methods=get),
            Route("/runs/{run_id:int}/progress", self.page(self.run_progress_json), methods=get),
            Route("/runs/{run_id:int}/dead-letters/replay", self.page(self.run_replay), methods=post),
            Route("/heartbeats", self.page(self.heartbeats), methods=get),
            Route("/modules", self.page(self.modules), methods=get),
            Route("/modules/upload", self.page(self.module_upload, limit=UPLOAD_LIMIT), methods=post),
            Route(module, self.page(self.module), methods=get),
            Route(module + "/permissions/add", self.page(self.permission_add), methods=post),
            Route(module + "/permissions/remove", self.page(self.permission_remove), methods=post),
            Route(module + "/delete", self.page(self.module_delete_confirm), methods=get),
            Route(module + "/delete", self.page(self.module_delete), methods=post),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            Route("/{path:path}", self.page(self.not_found), methods=["GET", "HEAD", "POST"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(SecurityHeaders)
        return app


def mount_dashboard(
    app: FastAPI,
    settings: Settings,
    store: ScheduleStore,
    *,
    registry: ModuleRegistry | None = None,
    prefix: str = PREFIX,
    throttle: FailureThrottle | None = None,
) -> Dashboard:
    """Mount the dashboard at ``prefix`` on ``app``; a registry it opens itself is closed
    when the app shuts down. ``throttle`` counts the failed logins (give the API's, so that
    wrong tokens from an address count together; a new one otherwise)."""
    from starlette.responses import RedirectResponse

    dashboard = Dashboard(settings, store, registry=registry, throttle=throttle)
    app.mount(prefix, dashboard.asgi_app(), name="dashboard")
    if not settings.api_token:
        log_event(_log, f"the dashboard ({prefix}) has no login until ADF_API_TOKEN is set")

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/", status_code=307)

    app.add_route(prefix, to_dashboard, methods=["GET", "HEAD"], include_in_schema=False)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi: Any) -> AsyncIterator[Any]:
        try:
            async with inner(asgi) as state:
                yield state
        finally:
            dashboard.close()

    app.router.lifespan_context = lifespan
    return dashboard
