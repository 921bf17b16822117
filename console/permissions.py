"""API permissions: the same model permissions that the role groups (console.roles) hold."""

from rest_framework.permissions import DjangoModelPermissions


class RolePermissions(DjangoModelPermissions):
    """Django model permissions, reads included: a role without ``view_<model>`` sees nothing."""

    perms_map = {**DjangoModelPermissions.perms_map, "GET": ["%(app_label)s.view_%(model_name)s"]}
    perms_map["HEAD"] = perms_map["GET"]
    perms_map["OPTIONS"] = perms_map["GET"]
