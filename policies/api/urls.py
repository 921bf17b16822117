"""The management API for servers, tools, agents, policies, delegations and revocation."""

from rest_framework.routers import SimpleRouter

from policies.api import configuration, delegations

router = SimpleRouter()
router.register("servers", configuration.ServerViewSet, basename="server")
router.register("tools", configuration.ToolViewSet, basename="tool")
router.register("agents", configuration.AgentViewSet, basename="agent")
router.register("policies", configuration.PolicyViewSet, basename="policy")
router.register("exchange-policies", configuration.ExchangePolicyViewSet, basename="exchangepolicy")
router.register("policy-settings", configuration.PolicySettingViewSet, basename="policysetting")
router.register("groups", configuration.GroupViewSet, basename="group")
router.register("delegations", delegations.DelegationViewSet, basename="delegation")
router.register("access-tokens", delegations.AccessTokenViewSet, basename="accesstoken")
router.register("refresh-tokens", delegations.RefreshTokenViewSet, basename="refreshtoken")
router.register("humans", delegations.HumanViewSet, basename="human")

urlpatterns = router.urls
