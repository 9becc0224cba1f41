# ruff: noqa: E501 - a table of sentences reads better one per line
"""The referral list's words (osteo_service.i18n takes them into its one table)."""

from __future__ import annotations

REFERRAL_TEXT: dict[str, dict[str, str]] = {
    "referrals_heading": {"zh-TW": "轉介清單：篩檢標示需做 DEXA 的影像", "en": "Referrals: films the screening flagged for DEXA"},
    "referrals_hint": {"zh-TW": "每張影像最新一次篩檢的結果（osteo screen）。不顯示姓名：請在 PACS 以檢查號查看病人。此篩檢無法排除骨質疏鬆，請以 DEXA 確認。",
                       "en": "The newest screening result of each film (osteo screen). No names: open the patient in the PACS by accession number. The screening cannot rule osteoporosis out; confirm with DEXA."},
    "referrals_all": {"zh-TW": "顯示全部已篩檢影像", "en": "Show every screened film"},
    "referrals_flagged": {"zh-TW": "只顯示標示者", "en": "Flagged only"},
    "referrals_none": {"zh-TW": "沒有符合的影像。", "en": "No films match."},
    "col_study_date": {"zh-TW": "檢查日期", "en": "Study date"},
    "col_accession": {"zh-TW": "檢查號", "en": "Accession number"},
    "col_side": {"zh-TW": "側別", "en": "Side"},
    "col_probability": {"zh-TW": "機率", "en": "Probability"},
    "col_flag": {"zh-TW": "標示", "en": "Flagged"},
    "col_model": {"zh-TW": "模型版本", "en": "Model version"},
    "col_study_uid": {"zh-TW": "Study Instance UID", "en": "Study Instance UID"},
    "flag_yes": {"zh-TW": "需轉介 DEXA", "en": "refer for DEXA"},
    "flag_no": {"zh-TW": "—", "en": "—"},
    "nav_referrals": {"zh-TW": "轉介清單", "en": "Referrals"},
}
