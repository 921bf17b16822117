"""API permissions: the same model permissions that the role groups (console.roles) hold."""

from rest_framework.permissions import DjangoModelPermissions


class RolePermissions(DjangoModelPermissions):
    """Django model permissions, reads included: a role without ``view_<model>`` sees nothing.

    A view's extra actions (approve, revoke, rotate-credentials, ...) are not the plain HTTP
    verbs DRF maps to add/change/delete; the view names what each needs in ``action_permissions``
    (e.g. ``{"approve": ["policies.approve_delegation"]}``).
    """

    perms_map = {**DjangoModelPermissions.perms_map, "GET": ["%(app_label)s.view_%(model_name)s"]}
    perms_map["HEAD"] = perms_map["GET"]
    perms_map["OPTIONS"] = perms_map["GET"]

    def has_permission(self, request, view) -> bool:
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is None:
            return super().has_permission(request, view)
        return bool(request.user and request.user.is_authenticated and request.user.has_perms(required))
