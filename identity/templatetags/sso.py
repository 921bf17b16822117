"""``{% sso_enabled as sso %}`` for the sign-in page: the SSO button shows only when configured."""

from django import template

from identity.sso import sso_enabled as _sso_enabled

register = template.Library()


@register.simple_tag
def sso_enabled() -> bool:
    return _sso_enabled()
