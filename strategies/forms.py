from django import forms

from repository.models import BackupDestination
from strategies.backup import covering_policy
from strategies.base import Option
from strategies.registry import (
    all_strategies,
    default_strategy_name,
    not_available,
    option_refusal,
    strategy_options,
)


def option_field(option: Option) -> forms.Field:
    """The form field of a strategy's declared option."""
    common = {"required": False, "label": option.label, "help_text": option.help, "initial": option.default}
    if option.type is bool:
        return forms.BooleanField(**common)
    if option.type is int:
        return forms.IntegerField(**common)
    if option.choices:
        return forms.ChoiceField(choices=[("", "Default")] + [(c, c) for c in option.choices], **common)
    return forms.CharField(**common)


class StrategyOptionFields:
    """A form's fields for every implemented strategy's declared options (named STRATEGY__OPTION), and
    the options of the chosen strategy out of them: one set for another strategy is an error on its
    field, saying whose it is and which options the chosen strategy has."""

    def add_option_fields(self) -> None:
        self.option_fields = {}
        for cls in all_strategies().values():
            if not cls.implemented:
                continue
            for option in cls.options:
                name = f"{cls.name}__{option.name}"
                self.fields[name] = option_field(option)
                self.option_fields[name] = (cls, option)

    def set_initial_options(self, strategy: str, options: dict) -> None:
        """Show `options` (a policy's, for its strategy) as the fields' initial values."""
        for name, value in options.items():
            if f"{strategy}__{name}" in self.fields:
                self.initial[f"{strategy}__{name}"] = value

    def chosen_options(self, strategy: str) -> dict:
        """Every option of `strategy` as the form holds it (left empty: its default); an error on the
        field of another strategy's option that was set (not left at its default)."""
        chosen = {}
        for field, (cls, option) in self.option_fields.items():
            value = self.cleaned_data.get(field)
            if value in (None, ""):
                value = option.default
            if cls.name == strategy:
                chosen[option.name] = value
            elif value != option.default:
                self.add_error(field, option_refusal(strategy, option.name))
        return chosen


class BackupNowForm(StrategyOptionFields, forms.Form):
    """'Back up now' on a VM: the policy's settings unless the operator chooses otherwise."""

    destination = forms.ModelChoiceField(
        queryset=BackupDestination.objects.filter(enabled=True),
        required=False,
        empty_label="The VM's policy destination",
    )
    strategy = forms.ChoiceField(required=False)
    type = forms.ChoiceField(
        choices=[("auto", "Incremental when possible"), ("full", "Full"), ("incremental", "Incremental")],
        initial="auto",
    )

    def __init__(self, *args, vm=None, **kwargs):
        super().__init__(*args, **kwargs)
        offered = strategy_options(vm) if vm else []
        options = [("", "The VM's policy strategy")] + [(name, label) for name, label, reason in offered if not reason]
        self.fields["strategy"].choices = options
        self.fields["strategy"].help_text = not_available(offered)
        self.add_option_fields()
        # The policy the inventory shows, explicit or by its rules: the same answer as the backup's.
        self.policy = covering_policy(vm) if vm else None
        self.has_policy = self.policy is not None
        if self.has_policy:
            self.set_initial_options(self.policy.strategy, self.policy.strategy_options)
        if not self.has_policy:
            self.fields["destination"].required = True
            self.fields["destination"].empty_label = None
            self.fields["strategy"].choices = options[1:]

    def clean(self):
        cleaned = super().clean()
        # The strategy the backup will run with: the one chosen, else the policy's (request_backup's rule).
        strategy = cleaned.get("strategy") or (self.policy.strategy if self.policy else default_strategy_name())
        cleaned["options"] = self.chosen_options(strategy)
        return cleaned
