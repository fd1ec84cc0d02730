"""
Provides the shared documents' REST API: a room's documents and one
document's text. Each a RealtimeAPIView behind the room's one access rule
(a private room the user may not read is NOT_FOUND, as an unknown one).
"""

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from django_realtime.payloads import iso
from django_realtime.rest import RealtimeAPIView, extend_schema, request_user

from ..models import Document
from . import selectors


class DocumentSerializer(serializers.Serializer):
    name = serializers.CharField()
    updated_at = serializers.DateTimeField()


class DocumentTextSerializer(DocumentSerializer):
    text = serializers.CharField(help_text='The shared text `content` (ydoc.getText("content")).')


def _document_data(document: Document) -> dict:
    return {"name": document.name, "updated_at": iso(document.updated_at)}


class DocumentListView(RealtimeAPIView):
    """The room's shared documents, by name."""

    @extend_schema(responses={200: DocumentSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        documents = selectors.documents_of(user=request_user(request), slug=slug)
        return Response([_document_data(d) for d in documents.only("name", "updated_at")])


class DocumentView(RealtimeAPIView):
    """One shared document and its text."""

    @extend_schema(responses={200: DocumentTextSerializer})
    def get(self, request: Request, slug: str, name: str) -> Response:
        document = selectors.document_get(user=request_user(request), slug=slug, name=name)
        data = _document_data(document)
        data["text"] = selectors.document_text(document=document)
        return Response(data)
