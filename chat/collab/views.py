"""
Provides the shared documents' REST API: a room's documents and one
document's text. Each a RealtimeAPIView behind the room's one access rule
(a private room the user may not read is NOT_FOUND, as an unknown one).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from django_realtime.payloads import iso
from django_realtime.rest import RealtimeAPIView, extend_schema, request_user

from ..models import Document
from ..views import slug_page
from . import selectors


class DocumentSerializer(serializers.Serializer):
    name = serializers.CharField()
    updated_at = serializers.DateTimeField()


class DocumentTextSerializer(DocumentSerializer):
    text = serializers.CharField(help_text='The shared text `content` (ydoc.getText("content")).')


def _document_data(document: Document) -> dict:
    return {"name": document.name, "updated_at": iso(document.updated_at)}


class DocumentPageSerializer(serializers.Serializer):
    results = DocumentSerializer(many=True)
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class DocumentListView(RealtimeAPIView):
    """The room's shared documents, by name, a page at a time."""

    @extend_schema(
        parameters=[
            OpenApiParameter("after", OpenApiTypes.STR, description="only names after this one"),
            OpenApiParameter("before", OpenApiTypes.STR, description="only names before this one"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 100, default 50"),
        ],
        responses={200: DocumentPageSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        documents = selectors.documents_of(user=request_user(request), slug=slug)
        page, next_url, previous_url = slug_page(
            request, documents.only("name", "updated_at"), "name"
        )
        return Response(
            {
                "results": [_document_data(d) for d in page],
                "next": next_url,
                "previous": previous_url,
            }
        )


class DocumentView(RealtimeAPIView):
    """One shared document and its text."""

    @extend_schema(responses={200: DocumentTextSerializer})
    def get(self, request: Request, slug: str, name: str) -> Response:
        document = selectors.document_get(user=request_user(request), slug=slug, name=name)
        data = _document_data(document)
        data["text"] = selectors.document_text(document=document)
        return Response(data)
