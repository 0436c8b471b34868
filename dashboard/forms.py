from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import password_validators_help_texts, validate_password

from core import roles
from core.tokens import MAX_DAYS

User = get_user_model()

ROLE_HELP = (
    "Viewer: reads everything but credentials. Operator: also runs backups, restores and syncs and edits "
    "policies. Admin: also manages users, managers, hosts' credentials and destinations."
)


class UserForm(forms.ModelForm):
    """Create or edit a user. The password is required only for a new user, whose role starts as the
    least one (viewer): an admin raises it on purpose, never by leaving the default."""

    role = forms.ChoiceField(choices=roles.ROLE_CHOICES, initial=roles.VIEWER, help_text=ROLE_HELP)
    password = forms.CharField(widget=forms.PasswordInput, required=False, strip=False)

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name", "is_active"]
        labels = {"email": "E-mail", "is_active": "Active"}
        help_texts = {
            "username": "What the user logs in with: letters, digits and @ . + - _ (at most 150).",
            "email": "Optional: where the user can be reached.",
            "is_active": "An inactive user cannot log in, and their API tokens are revoked.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Django's own wording ("Your password can't be too similar...") is written for the user
        # themselves; here an admin sets it, so the rules are said once, short.
        rules = " ".join(password_validators_help_texts()).replace("Your password", "It")
        if self.instance.pk:
            self.fields["role"].initial = roles.role_of(self.instance) or roles.VIEWER
            self.fields["password"].help_text = "Leave empty to keep the current password."
        else:
            self.fields["password"].required = True
            self.fields["password"].help_text = rules

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk and roles.removes_last_admin(
            self.instance, role=cleaned.get("role"), is_active=cleaned.get("is_active", True)
        ):
            raise forms.ValidationError(roles.LAST_ADMIN)
        return cleaned

    def clean_password(self):
        password = self.cleaned_data["password"]
        if password:
            validate_password(password, self.instance)
        return password

    def save(self, commit=True):
        user = super().save(commit=False)
        if self.cleaned_data["password"]:
            user.set_password(self.cleaned_data["password"])
        user.save()
        roles.set_role(user, self.cleaned_data["role"])
        return user


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. the script or host using it.")
    days = forms.IntegerField(
        label="Days",
        min_value=1,
        max_value=MAX_DAYS,
        required=False,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        default = f"{settings.API_TOKEN_DAYS} days" if settings.API_TOKEN_DAYS else "no expiry"
        days = self.fields["days"]
        days.help_text = f"How long it lasts, 1 to {MAX_DAYS} days. Empty: {default} (the site's default)."
