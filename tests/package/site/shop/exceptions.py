from rest_framework.response import Response


def site_exception_handler(exc, context):
    """The site's own error envelope, which the package's views must not take."""
    return Response({"site_error": str(exc)}, status=418)
