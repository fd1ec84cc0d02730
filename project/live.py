"""
Provides the demo's live board (`/live/`): a page built only with templates
and live HTML (contract §10), no script of its own. Each user sees the tasks
they own (staff see all) and, with the `view_task` permission, follows it
live: a task saved or deleted anywhere (the admin, a
`manage.py shell`) is appended, replaced or removed on every open board that
may show it, through stock Turbo (or `?client=htmx`, stock htmx).
"""

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import redirect, render

from django_realtime.rest import request_user
from django_realtime.topics import broadcast_model, register_namespace

from .models import Task

TOPIC = "live:tasks"


def may_watch(user: Any, topic: str) -> bool:
    """Who may follow the board live: staff, and users with the `view_task`
    permission; anyone else gets the stream's 404 and a board as rendered."""
    return bool(user.is_authenticated and (user.is_staff or user.has_perm("project.view_task")))


def may_see(user: Any, task: Task) -> bool:
    return bool(user.is_staff or task.owner_id == user.pk)


def register() -> None:
    register_namespace("live", subscribe=may_watch)
    broadcast_model(
        Task,
        topic=TOPIC,
        fields=["title", "done"],
        visible=may_see,
        check_fields=["owner"],
        template="project/live/task.html",
        container="tasks",
    )


class TaskForm(forms.Form):
    title = forms.CharField(max_length=200)


@login_required
def board(request: HttpRequest) -> HttpResponseBase:
    """The board; a POST adds a task of the user's (and redirects back)."""
    user = request_user(request)
    form = TaskForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        Task.objects.create(title=form.cleaned_data["title"], owner=user)
        return redirect(request.get_full_path())
    tasks = Task.objects.select_related("owner")
    if not user.is_staff:
        tasks = tasks.filter(owner=user)
    client = "htmx" if request.GET.get("client") == "htmx" else "turbo"
    context = {"tasks": tasks, "form": form, "client": client}
    return render(request, "project/live/board.html", context)
