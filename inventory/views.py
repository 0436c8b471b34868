from django import forms
from django.contrib import messages
from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from backupsite import roles
from inventory.engine import EngineError, check_connection, describe_certificate, fetch_ca_certificate
from inventory.forms import GuestAccessForm, HostSshForm, ManagerForm, clean_api_url
from inventory.models import VM, Cluster, DataCenter, Host, Manager, Tag
from inventory.ssh import fingerprint, test_ssh
from inventory.sync import request_sync
from inventory.validators import is_uuid
from repository.models import BackupPoint


@roles.role_required(roles.VIEW)
def vm_list(request):
    vms = VM.objects.with_backup_summary().select_related("cluster", "manager").prefetch_related("tags")
    f = {
        key: request.GET.get(key, "").strip()
        for key in ("q", "cluster", "datacenter", "tag", "protected", "last_backup", "missing")
    }
    if f["q"]:
        match = Q(name__icontains=f["q"])
        if is_uuid(f["q"]):
            match |= Q(engine_id=f["q"])
        vms = vms.filter(match)
    if f["cluster"]:
        vms = vms.filter(cluster_id=f["cluster"])
    if f["datacenter"]:
        vms = vms.filter(cluster__data_center_id=f["datacenter"])
    if f["tag"]:
        vms = vms.filter(tags__name=f["tag"])
    if f["protected"] in ("yes", "no"):
        vms = vms.filter(protected=f["protected"] == "yes")
    if f["last_backup"] == "never":
        vms = vms.filter(last_backup_status=None)
    elif f["last_backup"]:
        vms = vms.filter(last_backup_status=f["last_backup"])
    if f["missing"] != "yes":
        vms = vms.filter(missing_since=None)
    vms = vms.order_by("name")
    context = {"vms": vms[:500], "total": vms.count(), "f": f, "statuses": BackupPoint.Status.choices}
    if request.headers.get("HX-Request"):
        return render(request, "inventory/vm_rows.html", context)
    tree = (
        DataCenter.objects.filter(missing_since=None)
        .select_related("manager")
        .prefetch_related(
            Prefetch(
                "cluster_set",
                queryset=Cluster.objects.filter(missing_since=None)
                .annotate(vm_count=Count("vm", filter=Q(vm__missing_since=None)))
                .order_by("name"),
            )
        )
        .order_by("name")
    )
    context |= {
        "tree": tree,
        "tags": Tag.objects.filter(missing_since=None).values_list("name", flat=True).distinct().order_by("name"),
    }
    return render(request, "inventory/vm_list.html", context)


@roles.role_required(roles.VIEW)
def vm_detail(request, pk):
    vm = get_object_or_404(VM.objects.select_related("cluster", "host", "manager"), pk=pk)
    disks = list(vm.disks.select_related("storage_domain", "manager").order_by("-bootable", "name"))
    rows = [(d, d.incremental_blocker()) for d in disks]
    points = vm.backup_points.order_by("-started")[:50]
    return render(
        request,
        "inventory/vm_detail.html",
        {
            "vm": vm,
            "disks": rows,
            "points": points,
            "strategies": vm.strategy_options(disks),
            "tags": vm.tags.values_list("name", flat=True),
        },
    )


@roles.role_required(roles.ADMINISTER)
def vm_guest_access(request, pk):
    vm = get_object_or_404(VM, pk=pk)
    form = GuestAccessForm(request.POST or None, instance=vm)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Guest access of {vm.name} saved.")
        return redirect("vm-detail", pk=vm.pk)
    known = fingerprint(vm.guest_host_key) if vm.guest_host_key else ""
    return render(request, "inventory/vm_guest_access.html", {"form": form, "vm": vm, "host_key_fingerprint": known})


@roles.role_required(roles.OPERATE)
def vm_backup(request, pk):
    from repository.forms import BackupNowForm
    from strategies.backup import request_backup

    vm = get_object_or_404(VM.objects.select_related("manager", "host"), pk=pk)
    form = BackupNowForm(request.POST or None, vm=vm)
    if request.method == "POST" and form.is_valid():
        try:
            job = request_backup(
                vm=vm,
                owner=request.user,
                strategy=form.cleaned_data["strategy"] or None,
                type=form.cleaned_data["type"],
                destination=form.cleaned_data["destination"],
            )
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            return redirect("job-detail", job.pk)
    return render(request, "inventory/vm_backup.html", {"vm": vm, "form": form})


@roles.role_required(roles.VIEW)
def manager_list(request):
    managers = Manager.objects.annotate(vm_count=Count("vm", filter=Q(vm__missing_since=None)))
    return render(request, "inventory/manager_list.html", {"managers": managers})


@roles.role_required(roles.ADMINISTER)
def manager_edit(request, pk=None):
    manager = get_object_or_404(Manager, pk=pk) if pk else None
    form = ManagerForm(request.POST or None, request.FILES or None, instance=manager)
    fetched = None
    if request.method == "POST" and request.POST.get("action") == "fetch_ca":
        try:
            url, _ = clean_api_url(request.POST.get("api_url", ""))
            fetched = fetch_ca_certificate(url)
        except EngineError as e:
            form = ManagerForm(initial=request.POST.dict(), instance=manager)
            form.fetch_error = str(e)
        except forms.ValidationError as e:
            form = ManagerForm(initial=request.POST.dict(), instance=manager)
            form.fetch_error = " ".join(e.messages)
        else:
            initial = request.POST.dict() | {"fetched_ca": fetched.pem, "trust_fetched_ca": False}
            form = ManagerForm(initial=initial, instance=manager)
    elif request.method == "POST" and form.is_valid():
        created = manager is None
        manager = form.save()
        if form.url_note:
            messages.info(request, form.url_note)
        report = check_connection(manager)
        if report.ok:
            messages.success(request, f"Manager {manager.name} saved; the connection works.")
            if created:
                job = request_sync(manager, owner=request.user)
                messages.info(request, f"Inventory sync queued as job {job.pk}.")
        else:
            messages.error(request, f"Manager {manager.name} saved, but the connection test failed: {report.error}")
        return redirect("manager-list")
    elif request.method == "POST" and form.data.get("fetched_ca"):
        fetched = _describe(form.data["fetched_ca"])
    return render(request, "inventory/manager_form.html", {"form": form, "edited": manager, "fetched": fetched})


def _describe(pem):
    try:
        return describe_certificate(pem)
    except EngineError:
        return None


@require_POST
@roles.role_required(roles.ADMINISTER)
def manager_test(request, pk):
    manager = get_object_or_404(Manager, pk=pk)
    report = check_connection(manager)
    return render(request, "inventory/connection_report.html", {"manager": manager, "report": report})


@require_POST
@roles.role_required(roles.OPERATE)
def manager_sync(request, pk):
    manager = get_object_or_404(Manager, pk=pk)
    job = request_sync(manager, owner=request.user)
    return redirect("job-detail", job.pk)


@require_POST
@roles.role_required(roles.ADMINISTER)
def manager_delete(request, pk):
    manager = get_object_or_404(Manager, pk=pk)
    if BackupPoint.objects.filter(vm__manager=manager).exists():
        messages.error(
            request, f"Manager {manager.name} has backups; its inventory is kept for them. Remove the backups first."
        )
    else:
        manager.delete()
        messages.success(request, f"Manager {manager.name} removed with its inventory.")
    return redirect("manager-list")


@roles.role_required(roles.VIEW)
def host_list(request):
    hosts = Host.objects.select_related("cluster", "manager").filter(missing_since=None).order_by("manager", "name")
    return render(request, "inventory/host_list.html", {"hosts": hosts})


@roles.role_required(roles.ADMINISTER)
def host_edit(request, pk):
    host = get_object_or_404(Host, pk=pk)
    form = HostSshForm(request.POST or None, instance=host)
    result = None
    if request.method == "POST" and form.is_valid():
        host = form.save()
        if request.POST.get("action") == "test_ssh":
            result = test_ssh(host)
        else:
            messages.success(request, f"SSH settings of {host.name} saved.")
            return redirect("host-list")
    return render(
        request,
        "inventory/host_form.html",
        {
            "form": form,
            "host": host,
            "result": result,
            "has_key": bool(host.ssh_private_key),
            "has_password": bool(host.ssh_password),
            "host_key_fingerprint": fingerprint(host.ssh_host_key) if host.ssh_host_key else "",
        },
    )
