import re

import pytest
from playwright.sync_api import expect

from core import roles
from inventory.models import VM, Disk, Manager
from tests.browser import chromium_page
from tests.conftest import PASSWORD, register_manager

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_it_logs_in_and_shows_real_counts(live_server, make_user):
    make_user(roles.VIEWER, "vera")
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    for n in range(3):
        VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=f"vm{n}")
    with chromium_page() as page:
        log_in(page, live_server, "vera")
        assert page.text_content("#count-vms") == "3"
        assert page.text_content("#count-managers") == "1"
        # A viewer has no Settings in the navigation and gets a 403 there.
        assert page.locator("nav >> text=Settings").count() == 0
        response = page.goto(f"{live_server.url}/settings/")
        assert response.status == 403
        page.goto(f"{live_server.url}/")
        page.click("text=Log out")
        page.wait_for_url("**/login/")


def test_it_filters_the_inventory_as_you_type_and_shows_a_vms_disks(live_server, make_user):
    make_user(roles.OPERATOR, "otto")
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    web = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="web01")
    VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000002", name="db01")
    Disk.objects.create(
        manager=manager,
        engine_id="00000000-0000-0000-0000-0000000000d1",
        name="web01_root",
        vm=web,
        provisioned_size=10 * 2**30,
        format=Disk.Format.COW,
    )
    with chromium_page() as page:
        log_in(page, live_server, "otto")
        # A click does not wait for the navigation it starts: reads after one go through expect(),
        # which retries, or follow wait_for_url, which waits for the new page's load event (htmx,
        # loaded deferred, only binds the filter form by then).
        page.click("nav >> text=Inventory")
        page.wait_for_url("**/inventory/")
        expect(page.locator("#vm-rows tr")).to_have_count(2)
        page.fill("input[name=q]", "web")
        # htmx swapped the rows. (A locator, not wait_for_function: the page's CSP forbids evaluating strings.)
        expect(page.locator("#vm-rows tr")).to_have_count(1)
        page.click("text=web01")
        expect(page.locator("tr.disk")).to_have_count(1)
        expect(page.locator("tr.disk")).to_contain_text("10.0\xa0GiB")


def test_it_shows_a_field_error_when_adding_a_destination(live_server, make_user, tmp_path):
    make_user(roles.ADMIN, "ada")
    with chromium_page() as page:
        log_in(page, live_server, "ada")
        page.goto(f"{live_server.url}/destinations/new/")
        page.fill("input[name=name]", "nas")
        page.fill("input[name=path]", "relative/dir")
        page.click("button[type=submit]")
        expect(page.locator("[data-field=path]")).to_contain_text("must be absolute")
        (tmp_path / "nas").mkdir()
        page.fill("input[name=path]", str(tmp_path / "nas"))
        page.click("button[type=submit]")
        page.wait_for_url("**/destinations/")
        assert "nas" in page.text_content("table")


def test_it_adds_a_manager_trusting_its_fetched_ca_then_browses_its_vms(live_server, make_user, demo_sim, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    make_user(roles.ADMIN, "ada")
    host = demo_sim.api_url.split("//")[1].split("/")[0]
    with chromium_page() as page:
        log_in(page, live_server, "ada")
        page.goto(f"{live_server.url}/inventory/managers/new/")
        page.fill("input[name=name]", "demo")
        page.fill("input[name=api_url]", host)
        page.fill("input[name=username]", "admin@internal")
        page.click("button[value=fetch_ca]")
        expect(page.locator("code.fingerprint")).to_have_text(re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$"))
        page.fill("input[name=password]", demo_sim.password)
        page.click("button[value=save]")
        expect(page.locator("[data-field=trust_fetched_ca]")).to_contain_text("Confirm the fingerprint")
        page.fill("input[name=password]", demo_sim.password)
        page.check("input[name=trust_fetched_ca]")
        page.click("button[value=save]")
        page.wait_for_url("**/inventory/managers/")
        assert "the connection works" in page.text_content("main")
        assert "Connected" in page.text_content("tr.manager")
        page.click("button:has-text('Test connection')")
        page.wait_for_selector("ul.report li[data-step=version]")
        assert page.locator("ul.report li.bad").count() == 0

        page.click("nav >> text=Inventory")
        page.wait_for_url("**/inventory/")
        assert page.locator("#vm-rows tr.vm").count() >= 6
        page.select_option("select[name=tag]", "production")
        expect(page.locator("#vm-rows tr.vm")).to_have_count(2)
        page.click("text=db01")
        page.wait_for_url("**/inventory/vms/*/")
        expect(page.locator("tr.disk")).to_have_count(2)
        assert "ready" in page.text_content("tr.disk:has-text('db01_os') td.cbt")
        assert "RAW disks cannot track changes" in page.text_content("tr.disk:has-text('db01_data') td.cbt")
        assert page.locator("ul.strategies li.yes[data-strategy=image_transfer]").count() == 1
        # Offered where it can run (db01_os tracks changes), with the reason shown where not.
        assert page.locator("ul.strategies li.yes[data-strategy=cbt]").count() == 1
        assert page.locator("ul.strategies li.yes[data-strategy=ssh_transfer]").count() == 1  # root + site key
        assert "no proxy VM in cluster Production: mark one" in page.text_content(
            "ul.strategies li.no[data-strategy=disk_attachment]"
        )
        # The demo's data center has its export domain: the deprecated strategy is offered, saying so.
        assert "(deprecated)" in page.text_content("ul.strategies li.yes[data-strategy=export_domain]")


def test_it_backs_up_a_vm_and_restores_it_through_the_wizard(live_server, make_user, demo_sim, settings, tmp_path):
    from inventory.sync import sync_manager
    from repository.models import BackupDestination

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    make_user(roles.OPERATOR, "otto")
    manager = register_manager(demo_sim)
    sync_manager(manager)
    (tmp_path / "repo").mkdir()
    BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    vm = VM.objects.get(manager=manager, name="test01")
    with chromium_page() as page:
        log_in(page, live_server, "otto")
        page.goto(f"{live_server.url}/inventory/vms/{vm.pk}/")
        assert "unknown while the VM is not running" in page.text_content("dl")
        page.click("text=Back up now")
        page.select_option("select[name=destination]", label="repo")
        page.click("button[type=submit]")
        page.wait_for_url("**/jobs/*/")
        assert "Succeeded" in page.text_content("#job-progress .status")
        assert page.locator("progress").get_attribute("value") == page.locator("progress").get_attribute("max")
        assert "Backup point" in page.text_content("#job-progress")
        page.goto(f"{live_server.url}/inventory/vms/{vm.pk}/")
        assert page.locator("tr.point").count() == 1
        page.click("text=Restore…")
        page.fill("input[name=name]", "test01-from-browser")
        page.click("button[type=submit]")
        expect(page.locator("#confirm-restore")).to_contain_text("test01-from-browser")
        page.click("text=Confirm restore")
        page.wait_for_url("**/jobs/*/")
        assert "Succeeded" in page.text_content("#job-progress .status")
        assert "Restored as VM test01-from-browser" in page.text_content("#job-progress")
    with demo_sim.connect() as conn:
        restored = conn.system_service().vms_service().list(search="name=test01-from-browser")
        assert len(restored) == 1
        conn.system_service().vms_service().vm_service(restored[0].id).remove()


def test_it_runs_the_pages_swagger_ui_and_the_admin_under_the_content_security_policy(live_server, make_user):
    admin = make_user(roles.ADMIN, "ada")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    with chromium_page() as page:
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        log_in(page, live_server, "ada")
        page.goto(f"{live_server.url}/api/v1/docs/")
        page.wait_for_selector(".swagger-ui .info .title")
        assert "API" in page.text_content(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-tag")  # the schema loaded and rendered
        page.goto(f"{live_server.url}/admin/")
        page.goto(f"{live_server.url}/inventory/")
        page.goto(f"{live_server.url}/inventory/managers/{manager.pk}/")
        # The confirmation once written inline now comes from static/js/site.js.
        asked = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.click("text=Remove manager")
        assert asked and "Remove" in asked[0]
    assert Manager.objects.filter(pk=manager.pk).exists()
    assert refused == []
