from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password

from core import roles
from core.tokens import MAX_DAYS

User = get_user_model()


class UserForm(forms.ModelForm):
    """Create or edit a user. The password is required only for a new user."""

    role = forms.ChoiceField(choices=roles.ROLE_CHOICES)
    password = forms.CharField(widget=forms.PasswordInput, required=False, strip=False)

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["role"].initial = roles.role_of(self.instance) or roles.VIEWER
            self.fields["password"].help_text = "Leave empty to keep the current password."
        else:
            self.fields["password"].required = True

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
        min_value=1, max_value=MAX_DAYS, required=False, help_text="How long it lasts. Empty: the site's default."
    )
