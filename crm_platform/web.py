"""The HTML user interface: server-rendered pages built from tenant metadata.

Every page under ``/t/<tenant>/`` needs a member of that tenant signed in
through the browser session, and anyone else is sent to that tenant's sign-in
page. The views only read requests and call ``RecordService``. Forms,
listing state and formatting live in the ``renderers`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext, lazy_gettext, ngettext, refresh
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from metadata_engine.fieldtypes import TRUE_WORDS
from metadata_engine.model import Entity, Field
from renderers import charts, forms, i18n, listing
from renderers.listing import LookupChoices

from . import audit
from .auth import (
    actor_from_session,
    check_not_suspended,
    load_tenant,
    record_service,
    sign_in,
    sign_out,
)
from .context import get_platform
from .control import (
    MIN_PASSWORD_LENGTH,
    RESET_TOKEN_LIFETIME,
    Actor,
    InvalidResetToken,
    LockedOut,
    PasswordRejected,
)
from .errors import (
    BadQuery,
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    PlatformError,
    RecordInvalid,
    Unauthorized,
    VersionConflict,
)
from .querying import ListQuery
from .records import RecordService
from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

blueprint = Blueprint("web", __name__)

#: Endpoints that anyone may open. Every other tenant page needs a member.
PUBLIC_ENDPOINTS = frozenset({"web.login", "web.forgot_password",
                              "web.reset_password"})
#: Rows of each related list on a detail page.
RELATED_LIMIT = 10
#: Journal entries shown in a detail page's "Recent changes" card.
RECENT_CHANGES = 3
#: Columns of a related list besides the title.
RELATED_COLUMNS = 3
#: Maximum password length, in characters, passed to the password hasher.
MAX_PASSWORD_LENGTH = 1024


# Request set-up


@blueprint.before_request
def load_request_context() -> ResponseReturnValue | None:
    """Load the tenant and member, apply ``?lang=`` and require a sign-in."""
    slug = (request.view_args or {}).get("tenant")
    if slug is not None:
        runtime = load_tenant(str(slug))
        check_not_suspended(runtime)
        actor = actor_from_session(runtime)
        if actor is not None:
            g.actor = actor
    switched = switch_locale()
    g.locale = i18n.request_locale()
    refresh()
    signed_out = slug is not None and g.get("actor") is None
    if signed_out and request.endpoint not in PUBLIC_ENDPOINTS:
        target = request.full_path.removesuffix("?")
        return redirect(url_for("web.login", tenant=slug, next=target))
    if switched and request.method == "GET":
        return redirect(url_without_lang())
    return None


def switch_locale() -> bool:
    """Store a ``?lang=`` choice in the session and for the signed-in user."""
    locale = i18n.requested_locale()
    if locale is None:
        return False
    session[i18n.SESSION_LOCALE_KEY] = locale
    g.locale = locale
    actor = g.get("actor")
    if actor is not None and actor.locale != locale:
        get_platform().control.set_locale(actor.user_id, locale)
    return True


def args_without_lang() -> MultiDict[str, str]:
    return MultiDict([(key, value) for key, value in request.args.items(multi=True)
                      if key != "lang"])


def url_without_lang() -> str:
    return listing.url_with(request.path, args_without_lang())


@blueprint.app_context_processor
def inject_globals() -> dict[str, Any]:
    """Return the values every page template reads: locale, tenant, member."""
    values: dict[str, Any] = {
        "locale": g.get("locale") or i18n.DEFAULT_LOCALE,
        "ui_locales": i18n.UI_LOCALES,
        "lang_url": lang_url,
        "runtime": g.get("runtime"),
        "actor": g.get("actor"),
        "readable_entities": readable_entities,
    }
    return values


def readable_entities() -> list[Entity]:
    """Return the entities the signed-in member may read, for the navigation
    and the home page; computed once per request."""
    cached: list[Entity] | None = g.get("readable_entities")
    if cached is None:
        service = record_service(g.locale)
        cached = [
            entity for entity in g.runtime.definition.entities
            if service.access(entity.name).allows("read")
        ]
        g.readable_entities = cached
    return cached


def lang_url(locale: str) -> str:
    """Return the current page's URL that switches the UI to ``locale``."""
    args = args_without_lang()
    args.add("lang", locale)
    return listing.url_with(request.path, args)


# Errors


@blueprint.errorhandler(PlatformError)
def platform_error(error: PlatformError) -> ResponseReturnValue:
    if isinstance(error, NotFound):
        return not_found_page()
    log.info("web request %s %s failed: %s", request.method, request.path,
             error.message)
    return render_template("crm/error.html", status=error.status,
                           message=error.message), error.status


@blueprint.errorhandler(404)
def http_not_found(error: HTTPException) -> ResponseReturnValue:
    return not_found_page()


def not_found_page() -> ResponseReturnValue:
    message = gettext("The page or record you asked for does not exist, or you "
                      "may not see it.")
    return render_template("crm/error.html", status=404, message=message), 404


# Sign-in


@blueprint.route("/")
def index() -> ResponseReturnValue:
    """Send visitors to the only tenant, or explain which address to open."""
    tenants = [
        tenant for tenant in get_platform().control.list_tenants()
        if tenant.status != "purged"
    ]
    if len(tenants) == 1:
        return redirect(url_for("web.home", tenant=tenants[0].slug))
    return render_template("crm/index.html")


@blueprint.route("/t/<tenant>/login", methods=["GET", "POST"])
def login(tenant: str) -> ResponseReturnValue:
    runtime: TenantRuntime = g.runtime
    target = safe_next(runtime.slug, request.values.get("next"))
    if g.get("actor") is not None and request.method == "GET":
        return redirect(target)
    form = forms.LoginForm()
    error = None
    status = 200
    if request.method == "POST":
        if not forms.csrf_valid(form):
            log.info("rejected sign-in to tenant %s: invalid CSRF token", runtime.slug)
            error = expired_form_message()
            status = 400
        else:
            email, password = forms.login_values(form)
            try:
                actor = authenticate(runtime, email, password)
            except LockedOut as err:
                error = locked_out_message(err.minutes)
                status = 429
            except Unauthorized:
                error = gettext("Invalid e-mail address or password.")
                status = 401
            else:
                sign_in(runtime, actor)
                remember_locale(actor.user_id, actor.locale)
                log.info("user %s signed in to tenant %s", actor.user_id, runtime.slug)
                return redirect(target)
    return render_template("crm/login.html", form=form, error=error,
                           next_url=target), status


def authenticate(runtime: TenantRuntime, email: str, password: str) -> Actor:
    """Return the member with these credentials or raise ``Unauthorized``
    (``LockedOut`` after too many failures).

    NOTE: the client address logged with failures is the peer of this
    server, which is the proxy's address when a reverse proxy sits in front.
    """
    if not email or not password or len(password) > MAX_PASSWORD_LENGTH:
        raise Unauthorized("invalid e-mail or password")
    client_address = request.remote_addr or ""
    return get_platform().control.authenticate(runtime.tenant, email, password,
                                               client_address)


def locked_out_message(minutes: int) -> str:
    generic = gettext("Invalid e-mail address or password.")
    advice = ngettext("Too many failed attempts: try again in %(num)d minute.",
                      "Too many failed attempts: try again in %(num)d minutes.",
                      minutes)
    return f"{generic} {advice}"


def remember_locale(user_id: str, saved: str) -> None:
    """Save a language picked before signing in as the user's locale."""
    picked = session.get(i18n.SESSION_LOCALE_KEY)
    if picked and picked != saved:
        get_platform().control.set_locale(user_id, str(picked))


def safe_next(slug: str, raw: str | None) -> str:
    """Return ``raw`` if it is a path inside this tenant, else its home page."""
    home = url_for("web.home", tenant=slug)
    if not raw:
        return home
    parts = urlsplit(raw)
    prefix = f"/t/{slug}/"
    if parts.scheme or parts.netloc or "\\" in raw or not raw.startswith(prefix):
        return home
    if any(ord(character) < 32 or ord(character) == 127 for character in raw):
        return home
    if parts.path.rstrip("/") == f"/t/{slug}/login":
        return home
    return raw


@blueprint.route("/t/<tenant>/logout", methods=["POST"])
def logout(tenant: str) -> ResponseReturnValue:
    runtime: TenantRuntime = g.runtime
    form = forms.ActionForm()
    if not forms.csrf_valid(form):
        flash(expired_form_message(), "danger")
        return redirect(url_for("web.home", tenant=runtime.slug))
    sign_out(runtime)
    flash(gettext("You have signed out."), "info")
    return redirect(url_for("web.login", tenant=runtime.slug))


@blueprint.route("/t/<tenant>/logout-everywhere", methods=["POST"])
def logout_everywhere(tenant: str) -> ResponseReturnValue:
    """End every browser session of the signed-in user, on every tenant."""
    runtime: TenantRuntime = g.runtime
    form = forms.ActionForm()
    if not forms.csrf_valid(form):
        flash(expired_form_message(), "danger")
        return redirect(url_for("web.home", tenant=runtime.slug))
    actor: Actor = g.actor
    get_platform().control.end_sessions(actor.user_id)
    sign_out(runtime)
    flash(gettext("You have signed out on every device."), "info")
    return redirect(url_for("web.login", tenant=runtime.slug))


@blueprint.route("/t/<tenant>/forgot-password", methods=["GET", "POST"])
def forgot_password(tenant: str) -> ResponseReturnValue:
    """Put a reset link in the outbox for a member's e-mail address.

    The page reads the same whether or not the address belongs to a member.
    """
    runtime: TenantRuntime = g.runtime
    form = forms.ActionForm()
    if request.method == "GET":
        return render_forgot(form, None, sent=False, status=200)
    if not forms.csrf_valid(form):
        return render_forgot(form, expired_form_message(), sent=False, status=400)
    email = request.form.get("email", "").strip()
    # NOTE: requests are not rate-limited, so a client can fill a member's
    # outbox with reset links, each of which works on its own.
    if email and len(email) <= 254:
        get_platform().control.request_password_reset(runtime.tenant, email)
    return render_forgot(form, None, sent=True, status=200)


def render_forgot(form: forms.ActionForm, error: str | None, sent: bool,
                  status: int) -> ResponseReturnValue:
    minutes = int(RESET_TOKEN_LIFETIME.total_seconds() // 60)
    return render_template("crm/forgot_password.html", form=form, error=error,
                           sent=sent, link_minutes=minutes), status


@blueprint.route("/t/<tenant>/reset/<token>", methods=["GET", "POST"])
def reset_password(tenant: str, token: str) -> ResponseReturnValue:
    """Set a new password with a single-use link from a reset e-mail."""
    runtime: TenantRuntime = g.runtime
    control = get_platform().control
    form = forms.ActionForm()
    try:
        control.check_reset_token(runtime.tenant, token)
    except InvalidResetToken as err:
        log.info("rejected password reset on tenant %s: token is %s",
                 runtime.slug, err.problem)
        return render_reset(form, token, reset_token_message(err), err.status,
                            usable=False)
    if request.method == "GET":
        return render_reset(form, token, None, 200)
    if not forms.csrf_valid(form):
        return render_reset(form, token, expired_form_message(), 400)
    password = request.form.get("password", "")
    if password != request.form.get("confirm_password", ""):
        return render_reset(form, token, gettext("The two passwords differ."), 422)
    if len(password) > MAX_PASSWORD_LENGTH:
        message = gettext("The password is longer than %(num)d characters.",
                          num=MAX_PASSWORD_LENGTH)
        return render_reset(form, token, message, 422)
    try:
        control.reset_password(runtime.tenant, token, password)
    except InvalidResetToken as err:
        return render_reset(form, token, reset_token_message(err), err.status,
                            usable=False)
    except PasswordRejected as err:
        return render_reset(form, token, password_policy_message(err), 422)
    sign_out(runtime)
    flash(gettext("Your password has been changed. Sign in with the new "
                  "password."), "success")
    return redirect(url_for("web.login", tenant=runtime.slug))


def render_reset(form: forms.ActionForm, token: str, error: str | None,
                 status: int, usable: bool = True) -> ResponseReturnValue:
    page = render_template("crm/reset_password.html", form=form, token=token,
                           error=error, usable=usable)
    # The URL contains the token, so the page must not be kept in any cache.
    return page, status, {"Cache-Control": "no-store"}


def reset_token_message(error: InvalidResetToken) -> str:
    if error.problem == "used":
        return gettext("This password-reset link has already been used. "
                       "Ask for a new one.")
    if error.problem == "expired":
        return gettext("This password-reset link has expired. Ask for a new one.")
    return gettext("This password-reset link is not valid. Check that you "
                   "copied all of it, or ask for a new one.")


def password_policy_message(error: PasswordRejected) -> str:
    """Return the password policy's complaint in the user's language."""
    if error.problem == "short":
        return gettext("The password is too short: use at least %(num)d "
                       "characters.", num=MIN_PASSWORD_LENGTH)
    return gettext("The password is too weak: mix letters with digits or "
                   "symbols.")


def expired_form_message() -> str:
    return gettext("The form has expired or did not come from this site. "
                   "Please submit it again.")


# Pages


@blueprint.route("/t/<tenant>/")
def home(tenant: str) -> ResponseReturnValue:
    service = record_service(g.locale)
    counts: dict[str, int] = {}
    for entity in readable_entities():
        page = service.list(entity.name, ListQuery(limit=1, count=True))
        counts[entity.name] = page.total or 0
    return render_template("crm/home.html", counts=counts)


@blueprint.route("/t/<tenant>/<entity>/")
def record_list(tenant: str, entity: str) -> ResponseReturnValue:
    metadata = g.runtime.entity(entity)
    service = record_service(g.locale)
    access = service.require(metadata.name, "read")
    rights = {"create": access.allows("create")}
    lookups = lookup_filter_choices(service, request.args)
    try:
        state = listing.build_list_state(
            metadata, request.args, request.path, g.locale, lookups, access.hidden
        )
        page = service.list(metadata.name, state.query)
    except BadQuery as err:
        log.info("rejected list of %s in tenant %s: %s", metadata.name, tenant,
                 err.message)
        reset_url = url_for("web.record_list", tenant=tenant, entity=metadata.name)
        return render_template("crm/list.html", entity=metadata, state=None,
                               query_error=err.message, reset_url=reset_url,
                               rights=rights), 400
    titles = service.lookup_titles(metadata.name, page.records)
    users = user_names(page.records, state.column_names)
    total = page.total or 0
    return render_template(
        "crm/list.html",
        breakdowns=breakdowns(service, metadata, state.query, state.column_names),
        rights=rights,
        entity=metadata,
        state=state,
        records=page.records,
        titles=titles,
        users=users,
        total=total,
        page_links=state.page_links(request.path, total),
        view_links=listing.view_links(metadata, request.path, state.view, g.locale),
    )


def breakdowns(
    service: RecordService, entity: Entity, query: ListQuery, columns: Sequence[str]
) -> list[charts.BarChart]:
    """Chart the records of the current filters by the view's first picklist
    or boolean columns."""
    fields = [entity.field(name) for name in columns if entity.has_field(name)]
    words: dict[object, str] = {
        None: gettext("(empty)"), True: gettext("Yes"), False: gettext("No")
    }
    return [
        charts.bar_chart(
            field, service.group_counts(entity.name, query, field.name), g.locale,
            words,
        )
        for field in charts.chart_fields(fields)
    ]


def lookup_filter_choices(
    service: RecordService, args: Mapping[str, str]
) -> LookupChoices:
    def choices(field: Field) -> list[tuple[str, str]]:
        target = field.target or ""
        pairs = service.search_titles(target, "", forms.LOOKUP_CHOICE_LIMIT)
        current = args.get(field.name)
        if current and current not in {record_id for record_id, _ in pairs}:
            title = service.titles(target, [current]).get(current, current)
            pairs.insert(0, (current, title))
        return pairs

    return choices


def user_names(records: Sequence[Mapping[str, Any]], columns: Sequence[str]
               ) -> dict[str, str]:
    user_columns = [name for name in columns
                    if listing.SYSTEM_COLUMN_TYPES.get(name) == "user"]
    ids = listing.column_values(records, user_columns)
    return get_platform().control.user_names(ids)


@blueprint.route("/t/<tenant>/<entity>/<record_id>")
def record_detail(tenant: str, entity: str, record_id: str) -> ResponseReturnValue:
    metadata = g.runtime.entity(entity)
    service = record_service(g.locale)
    record = service.get(metadata.name, record_id)
    titles = service.lookup_titles(metadata.name, [record])
    related = []
    for item in service.related(metadata.name, record_id, RELATED_LIMIT):
        other = item.entity.name
        other_access = service.access(other)
        pointing_here = MultiDict([(item.field.name, record_id)])
        new_url = None
        if other_access.allows("create"):
            new_url = listing.url_with(
                url_for("web.record_new", tenant=tenant, entity=other), pointing_here)
        related.append({
            "entity": item.entity,
            "field": item.field,
            "records": item.page.records,
            "total": item.page.total or 0,
            "columns": related_columns(item.entity, item.field, other_access.hidden),
            "titles": service.lookup_titles(other, item.page.records),
            "new_url": new_url,
            "all_url": listing.url_with(
                url_for("web.record_list", tenant=tenant, entity=other), pointing_here),
        })
    users = user_names([record], ["created_by", "updated_by", "owner_id"])
    recent = audit.record_history(g.runtime, metadata.name, record_id)[:RECENT_CHANGES]
    changes = audit.describe(get_platform(), g.runtime, recent, g.locale)
    return render_template("crm/detail.html", entity=metadata, record=record,
                           titles=titles, related=related, users=users,
                           recent_changes=changes,
                           rights=record_rights(service, metadata.name, record_id),
                           hidden_fields=service.access(metadata.name).hidden)


#: Rights on one record that decide the buttons of its detail page.
RECORD_RIGHTS = ("edit", "delete")


def record_rights(
    service: RecordService, entity_name: str, record_id: str
) -> dict[str, bool]:
    """Return, for edit and delete, whether the actor may do it to this record:
    the right at some scope and a record that passes its predicate."""
    return {
        right: service.permits(entity_name, right, str(record_id))
        for right in RECORD_RIGHTS
    }


def require_record_right(
    service: RecordService, entity_name: str, record_id: str, right: str
) -> None:
    """Raise ``Forbidden`` unless the actor may ``right`` the record, which
    they can already read."""
    if record_rights(service, entity_name, record_id)[right]:
        return
    raise Forbidden(
        f"role {service.actor.role!r} may read {entity_name} {record_id!r} but "
        f"not {right} it: no grant or sharing covers this record for {right}; "
        "ask its owner or an admin",
        details={"entity": entity_name, "right": right},
    )


def related_columns(
    entity: Entity, lookup: Field, hidden: frozenset[str] = frozenset()
) -> list[Field]:
    """Return the columns of a related list: the title, then a few more, none
    of them ``hidden`` from the user."""
    names = [entity.title_field] if entity.title_field not in hidden else []
    for name in entity.default_list_view.columns:
        if len(names) > RELATED_COLUMNS:
            break
        if name in names or name == lookup.name or not entity.has_field(name):
            continue
        if name in hidden:
            continue
        if entity.field(name).type == "long_text":
            continue
        names.append(name)
    return [entity.field(name) for name in names if entity.has_field(name)]


@blueprint.route("/t/<tenant>/<entity>/new", methods=["GET", "POST"])
def record_new(tenant: str, entity: str) -> ResponseReturnValue:
    runtime: TenantRuntime = g.runtime
    metadata = runtime.entity(entity)
    service = record_service(g.locale)
    access = service.require(metadata.name, "create")
    locked = access.hidden | access.read_only | forms.workflow_fields(
        runtime.definition, metadata.name)
    form_class = forms.record_form_class(metadata, "create", g.locale,
                                         runtime.definition.content_hash, locked)
    if request.method == "GET":
        formdata = forms.initial_formdata(form_class, forms.default_values(metadata))
        prefill(form_class, request.args, formdata)
        form = form_class(formdata=formdata)
        return render_form(form, service, None, status=200)
    form = form_class()
    if not forms.csrf_valid(form):
        form.record_errors.append(expired_form_message())
        return render_form(form, service, None, status=400)
    values = forms.submitted_values(form, request.form)
    try:
        created = service.create(metadata.name, values)
    except (RecordInvalid, Conflict, LimitReached) as err:
        return render_failed_save(form, service, None, err)
    flash(gettext("%(entity)s created.", entity=metadata.label.get(g.locale)),
          "success")
    return redirect(url_for("web.record_detail", tenant=tenant, entity=metadata.name,
                            record_id=created["id"]))


def prefill(
    form_class: type[forms.RecordForm], args: Mapping[str, str],
    formdata: MultiDict[str, str],
) -> None:
    """Copy ``?field=value`` parameters into a new form (related "New" buttons)."""
    for field in form_class.input_fields:
        raw = args.get(field.name)
        if raw is None:
            continue
        name = forms.input_name(field.name)
        formdata.poplist(name)
        if field.type == "boolean":
            if raw.strip().lower() in TRUE_WORDS:
                formdata.add(name, "y")
            continue
        formdata.add(name, raw)


@blueprint.route("/t/<tenant>/<entity>/<record_id>/edit", methods=["GET", "POST"])
def record_edit(tenant: str, entity: str, record_id: str) -> ResponseReturnValue:
    runtime: TenantRuntime = g.runtime
    metadata = runtime.entity(entity)
    service = record_service(g.locale)
    record = service.get(metadata.name, record_id)
    require_record_right(service, metadata.name, record_id, "edit")
    access = service.access(metadata.name)
    locked = access.hidden | access.read_only | forms.workflow_fields(
        runtime.definition, metadata.name)
    form_class = forms.record_form_class(metadata, "edit", g.locale,
                                         runtime.definition.content_hash, locked)
    if request.method == "GET":
        formdata = forms.initial_formdata(form_class, record, record["version"])
        return render_form(form_class(formdata=formdata), service, record, 200)

    form = form_class()
    if not forms.csrf_valid(form):
        form.record_errors.append(expired_form_message())
        return render_form(form, service, record, status=400)
    version = forms.submitted_version(request.form)
    if version is None:
        form.record_errors.append(gettext(
            "The form did not say which version of the record it edits. "
            "Open the record again and repeat your change."))
        return render_form(form, service, record, status=400)

    changes = forms.changed_values(form, request.form, record)
    detail_url = url_for("web.record_detail", tenant=tenant, entity=metadata.name,
                         record_id=record_id)
    if not changes:
        flash(gettext("No changes to save."), "info")
        return redirect(detail_url)
    try:
        service.update(metadata.name, record_id, changes, expected_version=version)
    except (RecordInvalid, Conflict, VersionConflict, LimitReached) as err:
        return render_failed_save(form, service, record, err)
    flash(gettext("Changes saved."), "success")
    return redirect(detail_url)


def render_failed_save(
    form: forms.RecordForm,
    service: RecordService,
    record: Mapping[str, Any] | None,
    error: PlatformError,
) -> ResponseReturnValue:
    """Show the form again with the errors of a rejected create or update."""
    log.info("rejected %s of %s %s in tenant %s: %s", form.mode, form.entity.name,
             (record or {}).get("id", "(new)"), g.runtime.slug, error.message)
    if isinstance(error, VersionConflict):
        form.record_errors.append(gettext(
            "Someone else saved this record while you were editing it, so your "
            "changes were not saved. Open the current version and apply your "
            "changes again."))
        return render_form(form, service, record, status=409, stale=True)
    if isinstance(error, RecordInvalid):
        forms.apply_errors(form, error.details)
        if not error.details:
            form.record_errors.append(error.message)
        return render_form(form, service, record, status=422)
    if isinstance(error, LimitReached):
        form.record_errors.append(plan_limit_message(error))
        return render_form(form, service, record, status=error.status)
    field_details = {key: value for key, value in error.details.items()
                     if isinstance(value, list)}
    if field_details:
        forms.apply_errors(form, field_details)
    else:
        form.record_errors.append(error.message)
    return render_form(form, service, record, status=409)


def plan_limit_message(error: LimitReached) -> str:
    """Return the message of a plan limit (record quota or missing feature)
    in the user's language."""
    details = error.details
    if "record_quota" in details:
        return gettext(
            "Your plan allows %(quota)s records and this tenant has %(records)s, "
            "so no record can be added. Delete records or ask your service "
            "provider for a larger plan.",
            quota=details["record_quota"], records=details.get("records", "?"))
    if "feature" in details:
        return gettext(
            "Your plan (%(plan)s) does not include %(feature)s. Ask your "
            "service provider for a plan that includes it.",
            plan=details.get("plan", "?"),
            feature=FEATURE_LABELS.get(str(details["feature"]), details["feature"]))
    return error.message


#: Names of the plan features (``billing.FEATURES``) in messages.
FEATURE_LABELS = {
    "api": lazy_gettext("the REST API"),
    "import": lazy_gettext("CSV import"),
    "export": lazy_gettext("CSV and JSON export"),
    "audit_log": lazy_gettext("the audit log"),
}


def render_form(
    form: forms.RecordForm,
    service: RecordService,
    record: Mapping[str, Any] | None,
    status: int,
    stale: bool = False,
) -> ResponseReturnValue:
    entity = form.entity
    current: dict[str, Any] = dict(record or {})
    for field in form.input_fields:
        bound = form.input_for(field.name)
        if field.type == "lookup" and bound is not None and bound.data:
            current[field.name] = bound.data
    titles = service.lookup_titles(entity.name, [current])
    forms.fill_lookup_choices(
        form,
        lambda target, limit: service.search_titles(target, "", limit),
        current,
        titles,
    )
    access = service.access(entity.name)
    template = "crm/form.html"
    return render_template(template, entity=entity, form=form, record=record,
                           titles=titles, stale=stale, hidden_fields=access.hidden,
                           read_only_fields=access.read_only), status


@blueprint.route("/t/<tenant>/<entity>/<record_id>/delete", methods=["GET", "POST"])
def record_delete(tenant: str, entity: str, record_id: str) -> ResponseReturnValue:
    metadata = g.runtime.entity(entity)
    service = record_service(g.locale)
    record = service.get(metadata.name, record_id)
    require_record_right(service, metadata.name, record_id, "delete")
    form = forms.ActionForm()
    if request.method == "GET":
        return render_template("crm/delete.html", entity=metadata, record=record,
                               form=form, error=None)
    if not forms.csrf_valid(form):
        return render_template("crm/delete.html", entity=metadata, record=record,
                               form=form, error=expired_form_message()), 400
    try:
        service.delete(metadata.name, record_id,
                       expected_version=forms.submitted_version(request.form))
    except Conflict as err:
        log.info("rejected delete of %s %s in tenant %s: %s", metadata.name,
                 record_id, tenant, err.message)
        return render_template("crm/delete.html", entity=metadata, record=record,
                               form=form, error=delete_conflict_message(err)), 409
    except VersionConflict:
        log.info("rejected delete of %s %s in tenant %s: stale version",
                 metadata.name, record_id, tenant)
        message = gettext("Someone else changed this record after you opened this "
                          "page. Check the record, then delete it again.")
        return render_template("crm/delete.html", entity=metadata, record=record,
                               form=form, error=message), 409
    flash(gettext("%(entity)s deleted.", entity=metadata.label.get(g.locale)),
          "success")
    return redirect(url_for("web.record_list", tenant=tenant, entity=metadata.name))


def delete_conflict_message(error: Conflict) -> str:
    """Return the message of a "still referenced" conflict in the user's language."""
    details = error.details
    runtime: TenantRuntime = g.runtime
    other = str(details.get("entity", ""))
    field = str(details.get("field", ""))
    if not runtime.definition.has_entity(other):
        return error.message
    other_entity = runtime.definition.entity(other)
    field_label = (other_entity.field(field).label.get(g.locale)
                   if other_entity.has_field(field) else field)
    return gettext(
        "This record cannot be deleted: %(count)s %(entities)s refer to it "
        "through the field “%(field)s”. Delete them or point them at another "
        "record first.",
        count=details.get("count", 0),
        entities=other_entity.plural_label.get(g.locale),
        field=field_label,
    )

