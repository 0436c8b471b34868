from django import forms

from alerts.models import RPO_AT_LEAST, AlertRule


class AlertRuleForm(forms.ModelForm):
    webhook_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="Signs each webhook body (X-Signature: sha256=HMAC). Empty keeps the stored one.",
    )
    # Declared for its minimum: the model field's own form field (a PositiveIntegerField's) would let
    # 0 through, and say "greater than or equal to 0" of -5, where the rule is 1 hour.
    rpo_hours = forms.IntegerField(
        label="RPO (hours)",
        required=False,
        min_value=1,
        error_messages={"min_value": RPO_AT_LEAST},
        help_text="Alert when a VM the policy covers has no complete backup this many hours old or newer: at "
        "least 1; empty for no RPO alert. E.g. 26 for a policy that runs nightly.",
    )

    class Meta:
        model = AlertRule
        fields = ["emails", "webhook_url", "webhook_secret", "rpo_hours", "digest"]

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("webhook_secret"):
            cleaned["webhook_secret"] = self.instance.webhook_secret  # write-only: empty keeps it
        if cleaned.get("webhook_url") and not cleaned["webhook_secret"]:
            self.add_error("webhook_secret", "A webhook needs a secret: each body is signed with it (X-Signature).")
        return cleaned
