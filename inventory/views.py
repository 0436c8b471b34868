import uuid

from django.db.models import Q
from django.shortcuts import get_object_or_404, render

from backupsite import roles
from inventory.models import VM, Cluster


@roles.role_required(roles.VIEW)
def vm_list(request):
    vms = VM.objects.select_related("cluster", "manager").order_by("name")
    q = request.GET.get("q", "").strip()
    if q:
        match = Q(name__icontains=q)
        if _is_uuid(q):
            match |= Q(engine_id=q)
        vms = vms.filter(match)
    cluster = request.GET.get("cluster")
    if cluster:
        vms = vms.filter(cluster_id=cluster)
    context = {"vms": vms[:500], "q": q, "clusters": Cluster.objects.order_by("name"), "cluster": cluster}
    template = "inventory/vm_rows.html" if request.headers.get("HX-Request") else "inventory/vm_list.html"
    return render(request, template, context)


@roles.role_required(roles.VIEW)
def vm_detail(request, pk):
    vm = get_object_or_404(VM.objects.select_related("cluster", "host", "manager"), pk=pk)
    disks = vm.disks.select_related("storage_domain").order_by("name")
    points = vm.backup_points.order_by("-started")[:50]
    return render(request, "inventory/vm_detail.html", {"vm": vm, "disks": disks, "points": points})


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
