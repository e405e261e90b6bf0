"""Thin factories over timm: teachers (with offline weights) and students."""

from models.students import STUDENT_FAMILIES, create_student, student_family
from models.teachers import BUILTIN_TEACHERS, TeacherInfo, create_teacher, sha256_file

__all__ = [
    "BUILTIN_TEACHERS",
    "STUDENT_FAMILIES",
    "TeacherInfo",
    "create_student",
    "create_teacher",
    "sha256_file",
    "student_family",
]
