"""API plumbing shared by every app: the error body, users, and the v1 router."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from backupsite import roles

User = get_user_model()


def exception_handler(exc, context):
    """Every API error has one body: {"error": {"status", "code", "message", "fields"}}.

    `fields` maps a field name to its messages for validation errors, so a client can show
    each message next to the field it names.
    """
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=getattr(exc, "message_dict", None) or {"non_field_errors": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    fields = {}
    if isinstance(detail, dict) and "detail" in detail and len(detail) == 1:
        message = str(detail["detail"])
        code = getattr(detail["detail"], "code", "error")
    else:
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        first_field, first_errors = next(iter(fields.items()), ("", [""]))
        first = first_errors[0] if isinstance(first_errors, list) and first_errors else first_errors
        message = f"{first_field}: {first}" if first_field != "non_field_errors" else str(first)
        code = "invalid"
    response.data = {"error": {"status": response.status_code, "code": code, "message": message, "fields": fields}}
    return response


class UserSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(choices=roles.ROLE_CHOICES, write_only=True)
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "role",
            "password",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["id", "date_joined", "last_login"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["role"] = roles.role_of(instance) if instance.is_active else None
        return data

    def validate_password(self, value):
        try:
            validate_password(value)
        except DjangoValidationError as e:
            raise ValidationError(list(e.messages)) from None
        return value

    def validate(self, attrs):
        if self.instance is None and not attrs.get("password"):
            raise ValidationError({"password": ["A new user needs a password."]})
        return attrs

    @transaction.atomic
    def create(self, validated_data):
        role = validated_data.pop("role")
        password = validated_data.pop("password")
        user = User.objects.create_user(password=password, **validated_data)
        roles.set_role(user, role)
        return user

    @transaction.atomic
    def update(self, instance, validated_data):
        role = validated_data.pop("role", None)
        password = validated_data.pop("password", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        if password:
            instance.set_password(password)
        instance.save()
        if role:
            roles.set_role(instance, role)
        return instance


class UserViewSet(viewsets.ModelViewSet):
    queryset = User.objects.order_by("username").prefetch_related("groups")
    serializer_class = UserSerializer
    role_rules = {"read": roles.ADMINISTER, "write": roles.ADMINISTER}
    filterset_fields = ["is_active", "username"]
    search_fields = ["username", "email", "first_name", "last_name"]

    def destroy(self, request, *args, **kwargs):
        # Deactivate instead of deleting: jobs and points keep their owner.
        user = self.get_object()
        if user == request.user:
            raise ValidationError({"non_field_errors": ["You cannot deactivate yourself."]})
        user.is_active = False
        user.save(update_fields=["is_active"])
        return Response(status=status.HTTP_204_NO_CONTENT)
