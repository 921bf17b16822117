"""Prepare the provider instance's database: migrate, then the relying party (the console under
test) as a confidential OIDC client and the people with their groups, from a JSON spec on stdin."""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.sso_provider.settings")
django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402

from policies.models import Agent  # noqa: E402

spec = json.load(sys.stdin)
if spec.get("migrate"):
    call_command("migrate", verbosity=0)
for client in spec.get("clients", []):
    Agent.objects.update_or_create(
        client_id=client["client_id"],
        defaults={
            "name": "Console under test (SSO)",
            "client_type": Agent.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Agent.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": client["redirect_uri"],
            "client_secret": client["client_secret"],
            "algorithm": Agent.RS256_ALGORITHM,
            "skip_authorization": True,
            "registration_source": Agent.RegistrationSource.MANUAL,
        },
    )
for person in spec.get("people", []):
    user, _ = User.objects.get_or_create(username=person["username"], defaults={"email": person["email"]})
    user.set_password(person["password"])
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in person["groups"]])
    print(json.dumps({person["username"]: str(user.pk)}))
