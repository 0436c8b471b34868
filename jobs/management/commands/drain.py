from django.core.management.base import BaseCommand, CommandError

from jobs.nodes import NodeError, drain, undrain


class Command(BaseCommand):
    help = "Drain a worker node: its running jobs finish and it is sent no new ones (--undo: take jobs again)."

    def add_arguments(self, parser):
        parser.add_argument("node", help="the node's name (manage.py nodes lists them)")
        parser.add_argument("--undo", action="store_true", help="send the node new jobs again")

    def handle(self, *args, node, undo, **options):
        try:
            found = undrain(node) if undo else drain(node, by="the command line")
        except NodeError as e:
            raise CommandError(str(e)) from None
        if undo:
            self.stdout.write(f"Node {found.name} takes new jobs again.")
        else:
            self.stdout.write(f"Node {found.name} is draining: it finishes its running jobs and is sent no new ones.")
