from django import forms

from repository.models import BackupDestination


class BackupDestinationForm(forms.ModelForm):
    class Meta:
        model = BackupDestination
        fields = ["name", "kind", "path", "enabled"]
