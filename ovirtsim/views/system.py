"""The API root, and what every engine answers the same: the Blank template, permissions, statistics."""

import ovirtsdk4.types as types

from ovirtsim.permits import PERMITS, SUPER_USER_ROLE
from ovirtsim.views.base import ZERO_UUID, ViewsCore, build, href, ref, timestamp


class SystemViews(ViewsCore):
    def api(self, user: dict | None = None) -> types.Api:
        """The API root; `authenticated_user` and `effective_user` are the user making the request."""
        user_id = user["id"] if user else self.store.meta.get("admin_id")
        vms = self.store["vms"].values()
        return build(
            types.Api,
            product_info=build(
                types.ProductInfo,
                name="oVirt Engine",
                vendor="ovirt.org",
                instance_id=self.store.meta.get("instance_id"),
                version=build(types.Version, major=4, minor=5, build=6, revision=0, full_version="4.5.6-1.el9"),
            ),
            summary=build(
                types.ApiSummary,
                vms=build(types.ApiSummaryItem, total=len(vms), active=sum(v["status"] == "up" for v in vms)),
                hosts=build(
                    types.ApiSummaryItem,
                    total=len(self.store["hosts"]),
                    active=sum(h["status"] == "up" for h in self.store["hosts"].values()),
                ),
                storage_domains=build(
                    types.ApiSummaryItem,
                    total=len(self.store["storagedomains"]),
                    active=len(self.store["storagedomains"]),
                ),
                users=build(
                    types.ApiSummaryItem,
                    total=1 + len(self.store.meta.get("users", {})),
                    active=1 + len(self.store.meta.get("users", {})),
                ),
            ),
            authenticated_user=build(types.User, id=user_id, href=href("users", user_id or ZERO_UUID)),
            effective_user=build(types.User, id=user_id, href=href("users", user_id or ZERO_UUID)),
        )

    def version(self) -> types.Version:
        return build(types.Version, major=4, minor=7)

    def blank_template(self) -> types.Template:
        """The Blank template every engine has, which VMs made from scratch point at."""
        return build(
            types.Template,
            id=ZERO_UUID,
            href=href("templates", ZERO_UUID),
            name="Blank",
            description="Blank template",
            status=types.TemplateStatus.OK,
            memory=1024**3,
            os=build(types.OperatingSystem, type="other"),
            cpu=build(types.Cpu, topology=build(types.CpuTopology, sockets=1, cores=1, threads=1)),
            type=types.VmType.SERVER,
            version=build(types.TemplateVersion, version_number=1),
            creation_time=timestamp("2008-04-01T00:00:00+00:00"),
        )

    def user(self, user: dict) -> types.User:
        return build(
            types.User,
            id=user["id"],
            href=href("users", user["id"]),
            name=user["principal"],
            user_name=user["user_name"],
            principal=user["principal"],
            namespace="*",
            domain=build(types.Domain, name="internal-authz"),
        )

    def role(self, role: dict) -> types.Role:
        return build(
            types.Role,
            id=role["id"],
            href=href("roles", role["id"]),
            name=role["name"],
            administrative=role["administrative"],
            mutable=role["id"] != SUPER_USER_ROLE,
        )

    def permits(self, role: dict) -> list[types.Permit]:
        """A role's permits, with the engine's names and ids (ActionGroup)."""
        return [
            build(
                types.Permit,
                id=str(PERMITS[name]),
                href=href("roles", role["id"], "permits", str(PERMITS[name])),
                name=name,
                administrative=role["administrative"],
                role=ref(types.Role, "roles", role["id"]),
            )
            for name in sorted(role["permits"], key=PERMITS.get)
        ]

    def user_permissions(self, user: dict) -> list[types.Permission]:
        """A user's permissions: its roles, granted on the whole system."""
        return [
            build(
                types.Permission,
                id=user["id"][:-12] + role_id[-12:],
                href=href("users", user["id"], "permissions", user["id"][:-12] + role_id[-12:]),
                role=ref(types.Role, "roles", role_id),
                user=ref(types.User, "users", user["id"]),
            )
            for role_id in user["role_ids"]
        ]

    def system_permission(self, kind: str, ident: str) -> types.Permission:
        """The admin's SuperUser permission, which every object inherits from the system."""
        admin = self.store.meta.get("admin_id", ZERO_UUID)
        owner = {
            "vms": ("vm", types.Vm),
            "hosts": ("host", types.Host),
            "clusters": ("cluster", types.Cluster),
            "datacenters": ("data_center", types.DataCenter),
            "storagedomains": ("storage_domain", types.StorageDomain),
            "disks": ("disk", types.Disk),
        }[kind]
        return build(
            types.Permission,
            id=ZERO_UUID[:-12] + "0000000000aa",
            href=href(kind, ident, "permissions", ZERO_UUID[:-12] + "0000000000aa"),
            role=ref(types.Role, "roles", SUPER_USER_ROLE),
            user=ref(types.User, "users", admin),
            **{owner[0]: ref(owner[1], kind, ident)},
        )

    def statistics(self, kind: str, ident: str, values: list[tuple[str, str, object]]) -> list[types.Statistic]:
        """Statistics as the engine lists them: (name, unit, value); gauges, integer or decimal."""
        owner = {"vms": ("vm", types.Vm), "hosts": ("host", types.Host), "disks": ("disk", types.Disk)}[kind]
        result = []
        for n, (name, unit, value) in enumerate(values):
            ident_n = f"{n:08x}-0000-0000-0000-000000000000"
            result.append(
                build(
                    types.Statistic,
                    id=ident_n,
                    href=href(kind, ident, "statistics", ident_n),
                    name=name,
                    description=name.replace(".", " ").capitalize(),
                    kind=types.StatisticKind.GAUGE,
                    type=types.ValueType.DECIMAL if isinstance(value, float) else types.ValueType.INTEGER,
                    unit=build(types.StatisticUnit, unit),
                    values=[build(types.Value, datum=float(value))],
                    **{owner[0]: ref(owner[1], kind, ident)},
                )
            )
        return result
