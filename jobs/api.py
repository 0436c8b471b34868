import django_filters
from django.contrib.contenttypes.models import ContentType
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import accepted_schema, job_url
from core.audit import record_request
from jobs import models
from jobs.kinds import kind_choices


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.JobEvent
        fields = ["id", "time", "level", "message"]


class JobSerializer(serializers.ModelSerializer):
    progress_percent = serializers.FloatField(read_only=True, allow_null=True, help_text="null until a total is known")
    throughput = serializers.FloatField(read_only=True, allow_null=True, help_text="bytes per second; null before any")
    eta_seconds = serializers.IntegerField(read_only=True, allow_null=True, help_text="null unless running with a rate")
    progress_text = serializers.CharField(
        read_only=True,
        help_text='For people, as the pages say it: "1.2 GiB of 8.0 GiB (15.0%), 410.3 MiB/s, 2 min left"',
    )
    owner = serializers.SlugRelatedField(read_only=True, allow_null=True, slug_field="username")
    started_by = serializers.SerializerMethodField(
        help_text='What started it, if not a person: {"type": "policies.policy", "id": 3, "name": "nightly"}; '
        "null for a job a person asked for with no policy, or whose policy was deleted"
    )

    class Meta:
        model = models.Job
        fields = [
            "id",
            "kind",
            "status",
            "name",
            "manager",
            "vm",
            "started_by",
            "group",
            "params",
            "result",
            "owner",
            "origin",
            "not_after",
            "node",
            "bytes_done",
            "bytes_total",
            "progress_percent",
            "throughput",
            "eta_seconds",
            "progress_text",
            "created",
            "started",
            "finished",
            "heartbeat",
            "error",
            "cancel_requested",
        ]

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {"type": {"type": "string"}, "id": {"type": "integer"}, "name": {"type": "string"}},
        }
    )
    def get_started_by(self, job) -> dict | None:
        started_by = job.started_by if job.started_by_type_id else None
        if started_by is None:
            return None
        kind = job.started_by_type
        return {"type": f"{kind.app_label}.{kind.model}", "id": job.started_by_id, "name": str(started_by)}


class JobFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=kind_choices, help_text="A kind an app registered: backup, sync, ...")
    started_by_type = django_filters.CharFilter(
        method="filter_started_by_type", help_text='What started the jobs, as "app.model": policies.policy'
    )

    class Meta:
        model = models.Job
        fields = ["name", "kind", "status", "manager", "vm", "node", "group", "started_by_type", "started_by_id"]

    def filter_started_by_type(self, queryset, name, value):
        app_label, _, model = value.lower().partition(".")
        kind = ContentType.objects.filter(app_label=app_label, model=model).first()
        if kind is None:
            raise serializers.ValidationError({name: [f"No such type {value!r}: use app.model, e.g. policies.policy."]})
        return queryset.filter(started_by_type=kind)


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.Job.objects.select_related("owner").prefetch_related("started_by").order_by("-created")
    serializer_class = JobSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "events": roles.VIEW, "cancel": roles.OPERATE}
    filterset_class = JobFilter
    search_fields = ["name", "error"]

    @accepted_schema(JobSerializer, request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        if job.is_final:
            raise serializers.ValidationError({"non_field_errors": [f"Job {job.pk} has already {job.status}."]})
        job.request_cancel()
        job.log("warning", f"Cancel requested by {request.user.username}")
        record_request(request, action="job_cancelled", target=job)
        job.refresh_from_db()
        # 202 like the requests that queue a job: the job stops at its next check, followed at Location.
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED, headers={"Location": job_url(job)})

    # The job's own filters (kind, status...) are not the events'.
    @extend_schema(responses=JobEventSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=JobEventSerializer, filter_backends=[])
    def events(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(job.events.visible_to(request.user))
        return self.get_paginated_response(JobEventSerializer(page, many=True).data)


class NodeSerializer(serializers.ModelSerializer):
    running_jobs = serializers.SerializerMethodField(help_text="Jobs it runs, or was sent and has not started.")

    class Meta:
        model = models.Node
        fields = [
            "name",
            "status",
            "status_reason",
            "version",
            "slots",
            "clusters",
            "address",
            "started",
            "heartbeat",
            "running_jobs",
        ]

    def get_running_jobs(self, node) -> int:
        load = self.context.get("load")
        if load is None:
            load = self.context["load"] = models.Node.objects.load([n.name for n in self.context.get("nodes", [node])])
        return load.get(node.name, 0)


class NodeViewSet(viewsets.ReadOnlyModelViewSet):
    """The site's worker nodes. Draining one lets its running jobs finish and sends it no new ones."""

    queryset = models.Node.objects.all()
    serializer_class = NodeSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER, "drain": roles.ADMINISTER, "undrain": roles.ADMINISTER}
    filterset_fields = ["name", "status"]
    search_fields = ["name"]
    pagination_class = None  # a site has a handful of nodes

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action == "list":
            context["nodes"] = list(self.filter_queryset(self.get_queryset()))
        return context

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request, name=None):
        return self._change(request, name, drain=True)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def undrain(self, request, name=None):
        return self._change(request, name, drain=False)

    def _change(self, request, name, *, drain: bool):
        from jobs import nodes

        self.get_object()  # 404 for an unknown name
        try:
            node = nodes.drain(name, by=request.user.username) if drain else nodes.undrain(name)
        except nodes.NodeError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        record_request(request, action="node_drained" if drain else "node_undrained", target=node)
        return Response(NodeSerializer(node, context=self.get_serializer_context()).data)


router = routers.SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("nodes", NodeViewSet, basename="node")
