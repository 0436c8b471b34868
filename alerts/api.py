from rest_framework import routers, serializers, viewsets

from alerts import models
from core import roles
from core.audit import AuditedModelViewSet


class AlertRuleSerializer(serializers.ModelSerializer):
    webhook_secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, help_text="write-only"
    )
    has_webhook_secret = serializers.SerializerMethodField()

    class Meta:
        model = models.AlertRule
        fields = [
            "id",
            "policy",
            "emails",
            "webhook_url",
            "webhook_secret",
            "has_webhook_secret",
            "rpo_hours",
            "digest",
            "last_digest",
        ]
        read_only_fields = ["last_digest"]
        # DRF turns the model's minimum into its own, with its own words: the model's, said again.
        extra_kwargs = {"rpo_hours": {"error_messages": {"min_value": models.RPO_AT_LEAST}}}

    def get_has_webhook_secret(self, rule) -> bool:
        return bool(rule.webhook_secret)

    def to_representation(self, rule):
        data = super().to_representation(rule)
        data["webhook_url"] = models.webhook_shown(rule.webhook_url, may_edit=_may_edit(self.context))
        return data

    def validate(self, attrs):
        url = attrs.get("webhook_url", self.instance.webhook_url if self.instance else "")
        # An omitted or empty secret keeps the stored one.
        if not attrs.get("webhook_secret"):
            attrs.pop("webhook_secret", None)
        secret = attrs.get("webhook_secret") or (self.instance.webhook_secret if self.instance else "")
        if url and not secret:
            raise serializers.ValidationError(
                {"webhook_secret": ["A webhook needs a secret: each body is signed with it (X-Signature)."]}
            )
        return attrs


class AlertRuleViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "alert_rule"
    queryset = models.AlertRule.objects.select_related("policy").order_by("policy__name")
    serializer_class = AlertRuleSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["policy", "digest"]


class AlertDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = models.AlertDelivery
        fields = [
            "id",
            "rule",
            "time",
            "channel",
            "target",
            "subject",
            "event_count",
            "test",
            "status",
            "attempts",
            "error",
        ]
        read_only_fields = fields

    def to_representation(self, delivery):
        data = super().to_representation(delivery)
        if delivery.channel == models.AlertDelivery.Channel.WEBHOOK:
            data["target"] = models.webhook_shown(delivery.target, may_edit=_may_edit(self.context))
        return data


def _may_edit(context) -> bool:
    request = context.get("request")
    return request is not None and roles.can(request.user, roles.OPERATE)


class AlertDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.AlertDelivery.objects.order_by("-time", "-pk")
    serializer_class = AlertDeliverySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["rule", "channel", "status"]


class AlertEventSerializer(serializers.ModelSerializer):
    policy = serializers.CharField(source="rule.policy.name", read_only=True)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    delivery = serializers.CharField(
        source="delivery_state", read_only=True, help_text="How telling people went, in words."
    )

    class Meta:
        model = models.AlertEvent
        fields = [
            "id",
            "rule",
            "policy",
            "kind",
            "kind_label",
            "time",
            "subject",
            "details",
            "vm",
            "job",
            "point",
            "sent",
            "delivery",
        ]
        read_only_fields = fields


class AlertEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The alerts raised, newest first, with their figures and how they were delivered."""

    queryset = models.AlertEvent.objects.for_list().order_by("-time", "-pk")
    serializer_class = AlertEventSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["kind", "rule", "vm"]


router = routers.SimpleRouter()
router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")
router.register("alert-deliveries", AlertDeliveryViewSet, basename="alert-delivery")
router.register("alert-events", AlertEventViewSet, basename="alert-event")
