"""The admin index's database panel."""

from django import template

from dbops.status import headline

register = template.Library()


@register.inclusion_tag("admin/dbops/status_panel.html")
def database_panel():
    return headline()
