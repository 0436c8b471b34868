from django import forms

from core.ssh import normalize_private_key
from inventory.models import VM, Host, Manager
from ovirt.connection import describe_certificate, normalize_api_url
from ovirt.errors import EngineError


def clean_api_url(raw: str) -> tuple[str, str]:
    try:
        return normalize_api_url(raw)
    except ValueError as e:
        raise forms.ValidationError(str(e)) from None


def clean_ca_pem(pem: str) -> str:
    pem = (pem or "").strip()
    if not pem:
        return ""
    try:
        describe_certificate(pem)
    except EngineError as e:
        raise forms.ValidationError(str(e)) from None
    return pem + "\n"


class ManagerForm(forms.ModelForm):
    """Add or edit a manager. The CA is pasted, uploaded, or fetched from the engine and confirmed."""

    api_url = forms.CharField(label="Engine", help_text="Host name or https://ENGINE/ovirt-engine/api", max_length=300)
    password = forms.CharField(widget=forms.PasswordInput, required=False, strip=False)
    ca_file = forms.FileField(label="or upload the CA certificate", required=False)
    fetched_ca = forms.CharField(widget=forms.HiddenInput, required=False)
    trust_fetched_ca = forms.BooleanField(label="I checked this fingerprint and trust this CA", required=False)

    class Meta:
        model = Manager
        fields = [
            "name",
            "api_url",
            "username",
            "password",
            "ca_certificate",
            "ca_file",
            "verify_tls",
            "sync_interval_minutes",
        ]
        widgets = {"ca_certificate": forms.Textarea(attrs={"rows": 4, "placeholder": "-----BEGIN CERTIFICATE-----"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.url_note = ""
        if self.instance.pk:
            self.fields["password"].help_text = "Leave empty to keep the stored password."
        else:
            self.fields["password"].required = True

    def clean_api_url(self):
        url, self.url_note = clean_api_url(self.cleaned_data["api_url"])
        return url

    def clean_ca_certificate(self):
        return clean_ca_pem(self.cleaned_data["ca_certificate"])

    def clean(self):
        data = super().clean()
        upload = data.get("ca_file")
        if upload:
            try:
                data["ca_certificate"] = clean_ca_pem(upload.read().decode())
            except (UnicodeDecodeError, forms.ValidationError):
                self.add_error("ca_file", "The uploaded file is not a PEM certificate.")
        elif data.get("fetched_ca"):
            if not data.get("trust_fetched_ca"):
                self.add_error(
                    "trust_fetched_ca", "Confirm the fingerprint to trust the certificate fetched from the engine."
                )
            else:
                data["ca_certificate"] = clean_ca_pem(data["fetched_ca"])
        if data.get("verify_tls") and not data.get("ca_certificate") and not self.errors:
            self.add_error(
                "ca_certificate",
                "Give the engine's CA certificate (paste, upload or fetch it), or turn TLS verification off.",
            )
        return data

    def save(self, commit=True):
        manager = super().save(commit=False)
        if self.cleaned_data["password"]:
            manager.password = self.cleaned_data["password"]
        manager.ca_certificate = self.cleaned_data.get("ca_certificate", manager.ca_certificate)
        if commit:
            manager.save()
        return manager


class GuestAccessForm(forms.ModelForm):
    """Where the policies' pre/post snapshot commands reach this VM over SSH."""

    forget_host_key = forms.BooleanField(
        label="Forget the guest's SSH host key (after a reinstall); the next login learns it again", required=False
    )

    class Meta:
        model = VM
        fields = ["guest_address"]

    def save(self, commit=True):
        vm = super().save(commit=False)
        if self.cleaned_data["forget_host_key"]:
            vm.guest_host_key = ""
        if commit:  # only these two: a sync may be writing the engine's facts into the row meanwhile
            VM.objects.filter(pk=vm.pk).update(guest_address=vm.guest_address, guest_host_key=vm.guest_host_key)
        return vm


class HostSshForm(forms.ModelForm):
    """SSH credentials of a host; secrets are write-only (empty keeps the stored one)."""

    ssh_private_key = forms.CharField(
        label="SSH private key",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
    )
    ssh_password = forms.CharField(label="SSH password", required=False, strip=False, widget=forms.PasswordInput)
    clear_credentials = forms.BooleanField(label="Remove the stored key and password", required=False)
    forget_host_key = forms.BooleanField(
        label="Forget the host's SSH host key (after a reinstall); the next login learns it again", required=False
    )

    class Meta:
        model = Host
        fields = ["ssh_user", "ssh_port"]

    def clean_ssh_private_key(self):
        try:
            return normalize_private_key(self.cleaned_data["ssh_private_key"])
        except ValueError as e:
            raise forms.ValidationError(str(e)) from None

    def clean_ssh_port(self):
        port = self.cleaned_data["ssh_port"]
        if not 1 <= port <= 65535:
            raise forms.ValidationError("A port is a number from 1 to 65535.")
        return port

    def save(self, commit=True):
        host = super().save(commit=False)
        if self.cleaned_data["clear_credentials"]:
            host.ssh_private_key = host.ssh_password = ""
        if self.cleaned_data["forget_host_key"]:
            host.ssh_host_key = ""
        if self.cleaned_data["ssh_private_key"]:
            host.ssh_private_key = self.cleaned_data["ssh_private_key"]
        if self.cleaned_data["ssh_password"]:
            host.ssh_password = self.cleaned_data["ssh_password"]
        if commit:
            host.save()
        return host
