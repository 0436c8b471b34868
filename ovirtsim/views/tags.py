"""Tags."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ZERO_UUID, ViewsCore, build, check_follow, href, ref


class TagViews(ViewsCore):
    def tag(self, tag: dict, follow: dict | None = None) -> types.Tag:
        check_follow(follow or {}, set(), "Tag")
        return build(
            types.Tag,
            id=tag["id"],
            href=href("tags", tag["id"]),
            name=tag["name"],
            description=tag.get("description", ""),
            parent=ref(types.Tag, "tags", tag.get("parent") or ZERO_UUID),
        )
