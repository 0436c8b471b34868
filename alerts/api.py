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

    def get_has_webhook_secret(self, rule) -> bool:
        return bool(rule.webhook_secret)

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
        fields = ["id", "rule", "time", "channel", "target", "subject", "event_count", "status", "attempts", "error"]
        read_only_fields = fields


class AlertDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.AlertDelivery.objects.order_by("-time", "-pk")
    serializer_class = AlertDeliverySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["rule", "channel", "status"]


router = routers.SimpleRouter()
router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")
router.register("alert-deliveries", AlertDeliveryViewSet, basename="alert-delivery")
