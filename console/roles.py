"""
Console roles: what each kind of person may see and do.

A role is a Django group whose permissions this module sets (``ensure_roles`` runs after every
migrate), so the admin, the API and the commands all enforce the same table:

- security admin: everything in the console;
- approver: pending delegations only (see, approve, deny);
- compliance auditor: the audit log and its export, read-only everywhere else;
- end user: any active account; their own consent page and "My agents", no console.

Staff status (``is_staff``) only lets someone into the admin; what they see there is their role.
"""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db.models import Q


class Role(StrEnum):
    SECURITY_ADMIN = "Security admins"
    APPROVER = "Approvers"
    COMPLIANCE_AUDITOR = "Compliance auditors"


# Permissions per role, as "app_label.codename"; "app_label.*" means every permission of the app.
ROLE_PERMISSIONS: dict[Role, list[str]] = {
    Role.SECURITY_ADMIN: [
        "policies.*",
        "identity.*",
        "audit.view_auditevent",
        "audit.export_auditevent",
        "audit.view_auditexport",
        "audit.add_auditexport",
        "audit.view_auditcheckpoint",
        "audit.view_legalhold",
        "audit.add_legalhold",
        "audit.change_legalhold",
        "auditlog.view_logentry",
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
        "auth.add_group",
        "auth.change_group",
    ],
    Role.APPROVER: [
        "policies.view_delegation",
        "policies.approve_delegation",
    ],
    Role.COMPLIANCE_AUDITOR: [
        "policies.view_*",
        "identity.view_*",
        "audit.view_*",
        "audit.export_auditevent",
        "audit.add_auditexport",
        "auditlog.view_logentry",
        "auth.view_user",
        "auth.view_group",
    ],
}


def is_role_group(group: Group) -> bool:
    """A console role's group: it keeps its name and is never deleted (its members would silently
    lose their role, and ``ensure_roles`` would recreate it empty)."""
    return group.name in {role.value for role in Role}


def _permissions_matching(patterns: list[str]):
    query = Q(pk__in=[])
    for pattern in patterns:
        app_label, codename = pattern.split(".", 1)
        if codename == "*":
            query |= Q(content_type__app_label=app_label)
        elif codename.endswith("*"):
            query |= Q(content_type__app_label=app_label, codename__startswith=codename[:-1])
        else:
            query |= Q(content_type__app_label=app_label, codename=codename)
    return Permission.objects.filter(query)


def ensure_roles(**kwargs) -> None:
    """Create the role groups and set their permissions to exactly the table above."""
    for role, patterns in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        group.permissions.set(_permissions_matching(patterns))


def assign_role(user: AbstractBaseUser, role: Role) -> None:
    """Give ``user`` a console role; console roles need staff status to reach the admin."""
    user.groups.add(Group.objects.get(name=role.value))
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])


def has_role(user: AbstractBaseUser, role: Role) -> bool:
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=role.value).exists()
