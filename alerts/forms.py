from django import forms

from alerts.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    webhook_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="Signs each webhook body (X-Signature: sha256=HMAC). Empty keeps the stored one.",
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
