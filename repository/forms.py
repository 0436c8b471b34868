from django import forms
from django.core.exceptions import ValidationError

from jobs.models import Node
from jobs.nodes import NodeError, find_node
from repository.models import BackupDestination


class NodeNameField(forms.ModelChoiceField):
    """A node by name; an unknown name is refused naming the nodes there are."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return find_node(str(value))
        except NodeError as e:
            raise ValidationError(str(e), code="invalid_choice") from None


class BackupDestinationForm(forms.ModelForm):
    node = NodeNameField(
        Node.objects.all(),
        to_field_name="name",
        required=False,
        empty_label="shared by every node (mounted at this path on each)",
        help_text="A directory of one node alone (its own disk): its backups, restores, verifies and prunes run there.",
    )

    class Meta:
        model = BackupDestination
        fields = ["name", "kind", "path", "node", "enabled"]
