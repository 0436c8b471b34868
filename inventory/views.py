from django import forms
from django.contrib import messages
from django.db.models import Count, ProtectedError, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.ssh import fingerprint
from inventory.forms import GuestAccessForm, HostSshForm, ManagerForm, clean_api_url
from inventory.models import VM, Host, Manager, ProxyVM
from inventory.proxies import ProxyError, mark_proxy, offered_proxies
from inventory.ssh import credentials_label, ssh_target, test_ssh
from inventory.sync import request_sync
from jobs.models import Job
from ovirt.connection import describe_certificate, fetch_ca_certificate
from ovirt.errors import EngineError


@roles.role_required(roles.ADMINISTER)
def vm_guest_access(request, pk):
    vm = get_object_or_404(VM, pk=pk)
    form = GuestAccessForm(request.POST or None, instance=vm)
    if request.method == "POST" and form.is_valid():
        form.save()
        if form.cleaned_data["forget_host_key"]:
            record_request(request, action="host_key_forgotten", target=vm)
        messages.success(request, f"Guest access of {vm.name} saved.")
        return redirect("vm-detail", pk=vm.pk)
    known = fingerprint(vm.guest_host_key) if vm.guest_host_key else ""
    return render(request, "inventory/vm_guest_access.html", {"form": form, "vm": vm, "host_key_fingerprint": known})


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
        record_request(request, action="manager_created" if created else "manager_changed", target=manager)
        if form.url_note:
            messages.info(request, form.url_note)
        report = manager.check_connection()
        if report.ok:
            messages.success(request, f"Manager {manager.name} saved; the connection works.")
            if created:
                job = request_sync(manager, origin=Job.Origin.PAGE, owner=request.user)
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
    report = manager.check_connection()
    return render(request, "inventory/connection_report.html", {"manager": manager, "report": report})


@require_POST
@roles.role_required(roles.OPERATE)
def manager_sync(request, pk):
    manager = get_object_or_404(Manager, pk=pk)
    job = request_sync(manager, origin=Job.Origin.PAGE, owner=request.user)
    return redirect("job-detail", job.pk)


@require_POST
@roles.role_required(roles.ADMINISTER)
def manager_delete(request, pk):
    manager = get_object_or_404(Manager, pk=pk)
    try:
        manager.delete()
    except ProtectedError:
        # Backup points keep their VM's inventory row.
        messages.error(
            request, f"Manager {manager.name} has backups; its inventory is kept for them. Remove the backups first."
        )
    else:
        record_request(request, action="manager_deleted", target=manager)
        messages.success(request, f"Manager {manager.name} removed with its inventory.")
    return redirect("manager-list")


@roles.role_required(roles.VIEW)
def host_list(request):
    hosts = list(
        Host.objects.select_related("cluster", "manager")
        .filter(missing_since=None)
        .annotate(vm_count=Count("vm", filter=Q(vm__missing_since=None)))
        .order_by("manager", "name")
    )
    for host in hosts:
        host.ssh_target = ssh_target(host)
        host.credentials = credentials_label(host)
    return render(request, "inventory/host_list.html", {"hosts": hosts})


@roles.role_required(roles.VIEW)
def host_detail(request, pk):
    """A host: its state and versions as the engine reports them, how the site logs in to it, its VMs."""
    host = get_object_or_404(Host.objects.select_related("cluster", "manager"), pk=pk)
    vms = VM.objects.filter(host=host, missing_since=None).select_related("cluster").order_by("name")
    context = {
        "host": host,
        "ssh_target": ssh_target(host),
        "credentials": credentials_label(host),
        "host_key_fingerprint": fingerprint(host.ssh_host_key) if host.ssh_host_key else "",
        "vms": vms,
    }
    return render(request, "inventory/host_detail.html", context)


@roles.role_required(roles.ADMINISTER)
def host_edit(request, pk):
    host = get_object_or_404(Host, pk=pk)
    form = HostSshForm(request.POST or None, instance=host)
    result = None
    if request.method == "POST" and form.is_valid():
        host = form.save()
        record_request(request, action="host_changed", target=host)
        if form.cleaned_data["forget_host_key"]:
            record_request(request, action="host_key_forgotten", target=host)
        if request.POST.get("action") == "test_ssh":
            result = test_ssh(host)
        else:
            messages.success(request, f"SSH settings of {host.name} saved.")
            return redirect("host-detail", host.pk)
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


@roles.role_required(roles.VIEW)
def proxy_list(request):
    proxies = ProxyVM.objects.select_related("vm__cluster", "node").order_by("vm__name")
    context = {"proxies": proxies, "offered": offered_proxies(), "interfaces": ProxyVM.Interface.choices}
    return render(request, "inventory/proxy_list.html", context)


@require_POST
@roles.role_required(roles.ADMINISTER)
def proxy_mark(request, vm):
    target = get_object_or_404(VM, pk=vm)
    try:
        proxy = mark_proxy(vm=target, interface=request.POST.get("interface") or ProxyVM.Interface.VIRTIO_SCSI)
    except ProxyError as e:
        messages.error(request, str(e))
    else:
        record_request(request, action="proxy_created", target=proxy)
        messages.success(request, f"VM {target.name} is now the proxy VM of node {proxy.node_id}.")
    return redirect("proxy-list")


@require_POST
@roles.role_required(roles.ADMINISTER)
def proxy_remove(request, pk):
    proxy = get_object_or_404(ProxyVM.objects.select_related("vm"), pk=pk)
    name = str(proxy)
    proxy.delete()
    record_request(request, action="proxy_deleted", target=proxy, name=name)
    messages.success(request, f"VM {name} is no longer a proxy VM.")
    return redirect("proxy-list")
