"""User-facing validation messages, kept as data so that they can be
translated per locale and overridden by a tenant.

Templates use ``str.format`` placeholders that marshmallow and the record
service fill in: ``{max}``, ``{min}``, ``{input}``, ``{choices}``.
"""

from __future__ import annotations

from collections.abc import Mapping

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "en": {
        "required": "This field is required.",
        "null": "This field is required and cannot be empty.",
        "unknown": "Unknown field: it is not part of this entity.",
        "read_only": "This field is read-only and cannot be written.",
        "masked_value": (
            "This is a masked value, not the real one: send the real value or "
            "leave the field out."
        ),
        "invalid_text": "Not a valid text value.",
        "invalid_integer": "Not a valid whole number.",
        "too_large": "The number is too large.",
        "invalid_decimal": "Not a valid number.",
        "decimal_places": "At most {places} digits after the decimal point.",
        "decimal_digits": "At most {digits} digits before the decimal point.",
        "invalid_boolean": "Not a valid yes/no value.",
        "invalid_date": "Not a valid date; use YYYY-MM-DD.",
        "invalid_datetime": "Not a valid date and time; use ISO 8601.",
        "invalid_email": "Not a valid e-mail address.",
        "invalid_url": "Not a valid URL; it must start with http:// or https://.",
        "invalid_phone": "Not a valid phone number.",
        "invalid_list": "Not a valid list of options.",
        "invalid_id": "Not a valid record id.",
        "max_length": "Longer than the maximum length of {max} characters.",
        "min": "Must be at least {min}.",
        "max": "Must be at most {max}.",
        "range": "Must be between {min} and {max}.",
        "pattern": "Does not match the required format.",
        "choice": "{input!r} is not one of the options: {choices}.",
        "lookup_missing": "No {entity} record has the id {input!r}.",
        "unique": "Another record already has this value.",
        "owner_not_member": "No member of this tenant has the user id {input!r}.",
        "dependent_option": (
            "{input!r} is not allowed when {field} is {value!r}; use one of: "
            "{choices}."
        ),
        "field_not_editable": (
            "Your role may not change this field; ask an admin for a role or "
            "permission set that makes it editable."
        ),
        "required_for_transition": "Required to {transition}.",
        "state_initial": (
            "A new record starts in state {state}; leave this field empty and "
            "use the workflow's buttons to move it on."
        ),
        "state_by_transition": (
            "This field changes only through the workflow's transitions; use "
            "one of the buttons on the record's page."
        ),
        "owner_not_changeable": (
            "Your role may not give records to other users; leave the owner "
            "out, or ask someone with the change-owner right."
        ),
        "record_not_editable": (
            "A record with this key exists, and your role may not change it."
        ),
        "rule_failed": (
            "The validation rule {rule!r} could not be checked: {reason}. Ask an "
            "administrator to correct the rule."
        ),
        "formula_failed": (
            "This value could not be computed: {reason}. Ask an administrator to "
            "correct the formula."
        ),
        "default_failed": (
            "The default value could not be computed: {reason}. Ask an "
            "administrator to correct the field's default_expr."
        ),
        "read_only_while": "This field is read-only while {condition} is true.",
        "read_only_failed": (
            "Whether this field is read-only could not be checked: {reason}. Ask "
            "an administrator to correct the field's read_only_when."
        ),
        "reason_type": "a value is empty or has a type the expression cannot use",
        "reason_division": "it divides by zero",
        "reason_result": "the result {value!r} is not a valid {type} value",
        "reason_other": "the expression failed",
    },
    "zh-CN": {
        "required": "此字段为必填项。",
        "null": "此字段为必填项，不能为空。",
        "unknown": "未知字段：它不属于此实体。",
        "read_only": "此字段为只读，不能写入。",
        "masked_value": "这是遮盖后的值，不是真实值：请提交真实值，或不填写此字段。",
        "invalid_text": "不是有效的文本。",
        "invalid_integer": "不是有效的整数。",
        "too_large": "数值过大。",
        "invalid_decimal": "不是有效的数字。",
        "decimal_places": "小数点后最多 {places} 位。",
        "decimal_digits": "小数点前最多 {digits} 位。",
        "invalid_boolean": "不是有效的是/否值。",
        "invalid_date": "不是有效的日期，请使用 YYYY-MM-DD 格式。",
        "invalid_datetime": "不是有效的日期时间，请使用 ISO 8601 格式。",
        "invalid_email": "不是有效的电子邮件地址。",
        "invalid_url": "不是有效的网址，必须以 http:// 或 https:// 开头。",
        "invalid_phone": "不是有效的电话号码。",
        "invalid_list": "不是有效的选项列表。",
        "invalid_id": "不是有效的记录 ID。",
        "max_length": "长度超过上限 {max} 个字符。",
        "min": "不能小于 {min}。",
        "max": "不能大于 {max}。",
        "range": "必须介于 {min} 和 {max} 之间。",
        "pattern": "格式不符合要求。",
        "choice": "{input!r} 不是可选项之一：{choices}。",
        "lookup_missing": "不存在 ID 为 {input!r} 的{entity}记录。",
        "unique": "已有其他记录使用此值。",
        "owner_not_member": "本租户中没有用户 ID 为 {input!r} 的成员。",
        "dependent_option": (
            "{field}为 {value!r} 时不能选择 {input!r}；可选：{choices}。"
        ),
        "field_not_editable": (
            "您的角色不能修改此字段；请管理员授予可编辑此字段的角色或权限集。"
        ),
        "required_for_transition": "执行「{transition}」前必须填写。",
        "state_initial": "新记录从状态 {state} 开始；请留空此字段，再用流程按钮推进。",
        "state_by_transition": (
            "此字段只能通过流程的状态转换修改；请使用记录页面上的按钮。"
        ),
        "owner_not_changeable": (
            "您的角色不能把记录转给其他用户；请不填写负责人，"
            "或请有更改负责人权限的人操作。"
        ),
        "record_not_editable": "已有使用此键值的记录，您的角色不能修改它。",
        "rule_failed": "无法检查校验规则 {rule!r}：{reason}。请管理员修正该规则。",
        "formula_failed": "无法计算此值：{reason}。请管理员修正该公式。",
        "default_failed": (
            "无法计算默认值：{reason}。请管理员修正该字段的 default_expr。"
        ),
        "read_only_while": "当 {condition} 为真时，此字段为只读。",
        "read_only_failed": (
            "无法检查此字段是否只读：{reason}。请管理员修正该字段的 read_only_when。"
        ),
        "reason_type": "某个值为空，或其类型不能用于该表达式",
        "reason_division": "表达式除以零",
        "reason_result": "结果 {value!r} 不是有效的 {type} 值",
        "reason_other": "表达式执行失败",
    },
}

SUPPORTED_LOCALES: tuple[str, ...] = tuple(MESSAGES)


def messages_for(locale: str | None) -> Mapping[str, str]:
    """Return the message table for ``locale``, falling back to English."""
    if locale is not None and locale in MESSAGES:
        return MESSAGES[locale]
    if locale and locale.lower().startswith("zh"):
        return MESSAGES["zh-CN"]
    return MESSAGES["en"]


def normalize_locale(locale: str | None) -> str:
    """Map ``zh``, ``zh_CN`` or ``zh-Hans`` to ``zh-CN`` and the rest to ``en``."""
    if locale and locale.replace("_", "-").lower().startswith("zh"):
        return "zh-CN"
    return "en"
