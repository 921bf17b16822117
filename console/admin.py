"""The console's admin pieces outside one app: pages of admin actions, and People (Django users)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django_otp.plugins.otp_totp.models import TOTPDevice
from unfold.admin import ModelAdmin
from unfold.decorators import action, display
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

from audit.links import events_url
from console.roles import is_role_group
from policies.api.base import REVOKE_PERMISSION
from policies.models import Delegation
from policies.services import revoke_human_delegations


def object_or_404(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> Model:
    """The object a detail action's URL names; an id that is unknown or malformed is a 404, not a 500."""
    obj = model_admin.get_object(request, object_id)
    if obj is None:
        raise Http404(f"No such {model_admin.model._meta.verbose_name}.")
    return obj


class RevokeActions:
    """For admins with revoke actions: revoking ends delegations, whichever list it starts from."""

    def has_revoke_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perms(REVOKE_PERMISSION)


def admin_page(
    model_admin: admin.ModelAdmin, request: HttpRequest, template: str, title: str, **context: Any
) -> TemplateResponse:
    """A page of an admin action (a form, a confirmation, a result) inside the console's frame."""
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": title,
            **context,
        },
    )


def confirm_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    question: str,
    effects: list[str],
    button: str,
    cancel_url: str,
    hidden: list[tuple[str, str]] | None = None,
) -> TemplateResponse:
    """Ask before an action that cannot be undone; the page POSTs back to the same URL with ``confirm``."""
    return admin_page(
        model_admin,
        request,
        "admin/console/confirm.html",
        title,
        question=question,
        effects=effects,
        button=button,
        cancel_url=cancel_url,
        hidden=hidden or [],
    )


def confirm_then_revoke(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    targets: list,
    revoke: Callable[..., int],
    *,
    title: str,
    question: str,
    effects: list[str],
    button: str,
    hidden: list[tuple[str, str]] | None,
    cancel: str,
) -> HttpResponse | None:
    """Ask first; once confirmed, ``revoke(target, by=...)`` each target and say how many ended.

    ``hidden`` carries a bulk action's selection (the changelist then continues); without it the
    detail page's action redirects back to ``cancel``.
    """
    if request.method != "POST" or request.POST.get("confirm") != "yes":
        return confirm_page(
            model_admin,
            request,
            title=title,
            question=question,
            effects=effects,
            button=button,
            cancel_url=cancel,
            hidden=hidden,
        )
    count = sum(revoke(target, by=request.user) for target in targets)
    model_admin.message_user(request, f"Revoked {count} delegation(s) and their tokens.", messages.SUCCESS)
    return redirect(cancel) if hidden is None else None


def action_selection(action_name: str, queryset) -> list[tuple[str, str]]:
    """The hidden fields that resubmit a changelist action for the same rows after a confirmation."""
    return [("action", action_name)] + [
        (admin.helpers.ACTION_CHECKBOX_NAME, str(pk)) for pk in queryset.values_list("pk", flat=True)
    ]


def events_link(text: str = "events", **filters: str) -> str:
    return format_html('<a class="text-primary-600 underline" href="{}">{}</a>', events_url(**filters), text)


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class PersonAdmin(RevokeActions, BaseUserAdmin, ModelAdmin):
    """People: the humans agents act for, and the console's staff."""

    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    list_display = ["username", "email", "is_staff", "is_active", "last_login", "events"]
    actions = ["revoke_all_delegations"]
    actions_detail = ["revoke_all_delegations_of_person"]

    @display(description="audit")
    def events(self, obj: User) -> str:
        return events_link(human=obj.username)

    @admin.action(description="Revoke every delegation of the selected people", permissions=["revoke"])
    def revoke_all_delegations(self, request, queryset):
        return confirm_then_revoke(
            self,
            request,
            list(queryset),
            revoke_human_delegations,
            title="Revoke every delegation",
            question="Revoke every delegation of these people?",
            effects=[f"{user.username}: all agents lose access for them" for user in queryset],
            button="Revoke everything",
            hidden=action_selection("revoke_all_delegations", queryset),
            cancel=request.get_full_path(),
        )

    @action(description="Revoke all delegations", url_path="revoke-delegations", permissions=["revoke"])
    def revoke_all_delegations_of_person(self, request, object_id):
        user = object_or_404(self, request, object_id)
        return confirm_then_revoke(
            self,
            request,
            [user],
            revoke_human_delegations,
            title=f"Revoke every delegation of {user.username}",
            question=f"Revoke every delegation of {user.username}?",
            effects=[
                f"{user.delegations.filter(status__in=Delegation.LIVE).count()} live or pending "
                "delegation(s) and all their tokens end now.",
                "Other people's agents keep working.",
            ],
            button="Revoke everything",
            hidden=None,
            cancel=request.path.rsplit("revoke-delegations", 1)[0],
        )

    # Superuser status and raw permissions are a superuser's to give: a security admin assigns
    # console roles (groups) only, and so cannot make anyone, themselves included, more than that.
    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += ["is_superuser", "user_permissions"]
        return readonly

    def has_change_permission(self, request, obj=None) -> bool:
        # Nor take over a superuser's account (its password, its email, its groups).
        if isinstance(obj, User) and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        # Role groups' permissions are console.roles' table (ensure_roles); other groups only say who
        # may delegate, so only a superuser gives a group raw permissions.
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser or (obj is not None and is_role_group(obj)):
            readonly.append("permissions")
        if obj is not None and is_role_group(obj):
            readonly.append("name")
        return readonly

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and is_role_group(obj))


# django-otp registers an admin page for TOTP devices, which could show their secrets: staff
# manage their own second factor on the two-factor pages (console.security).
admin.site.unregister(TOTPDevice)
