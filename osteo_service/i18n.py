# ruff: noqa: E501 - a table of sentences reads better one per line
"""The page's words in Traditional Chinese (the default) and English. One table, so a missing
translation is a test failure, not a blank on the page."""

from __future__ import annotations

from osteo.etl.synthetic import DEMO_NOTICE, DEMO_NOTICE_ZH
from osteo_service.auth.text import AUTH_TEXT
from osteo_service.referral_text import REFERRAL_TEXT

LANGS = ("zh-TW", "en")
DEFAULT_LANG = "zh-TW"

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh-TW": "骨質疏鬆篩檢", "en": "Osteoporosis screening"},
    "subtitle": {"zh-TW": "以髖關節 X 光片輔助篩檢骨質疏鬆", "en": "Screening for osteoporosis from a hip X-ray"},
    "nav_screen": {"zh-TW": "篩檢", "en": "Screen"},
    "nav_selfcheck": {"zh-TW": "自我評估", "en": "Self-assessment"},
    "nav_manual": {"zh-TW": "使用說明", "en": "User manual"},
    "nav_booking": {"zh-TW": "預約掛號", "en": "Book an appointment"},
    "other_lang": {"zh-TW": "English", "en": "中文"},
    "disclaimer": {
        "zh-TW": "本工具為篩檢輔助，無法排除骨質疏鬆，也不能取代雙能量 X 光吸收儀（DEXA）骨密度檢查；"
                 "結果須由醫師判讀。",
        "en": "This tool is a screening aid: it cannot rule osteoporosis out and does not replace a DEXA "
              "bone-density scan. A doctor must interpret the result.",
    },
    # shown on every page while the served models learned from synthetic images (osteo/etl/synthetic.py)
    "demo_banner": {"zh-TW": DEMO_NOTICE_ZH, "en": DEMO_NOTICE},
    "upload_heading": {"zh-TW": "1. 上傳髖關節 X 光片", "en": "1. Upload a hip X-ray"},
    "upload_hint": {
        "zh-TW": "可上傳 DICOM、PNG 或 JPEG（上限 {limit} MB）。影像只在記憶體中處理，不會被保存。",
        "en": "DICOM, PNG or JPEG (at most {limit} MB). The image is processed in memory and not kept.",
    },
    "file_label": {"zh-TW": "影像檔", "en": "Image file"},
    "cropped_label": {"zh-TW": "這張影像已是股骨頸的裁切圖，直接使用", "en": "This image is already a femoral-neck crop: use it as is"},
    "box_heading": {"zh-TW": "2. 確認股骨頸框選", "en": "2. Check the femoral-neck box"},
    "box_hint": {
        "zh-TW": "系統會自動找出股骨頸並畫出框線；可拖曳移動框線，拖曳右下角可調整大小。"
                 "未啟用 JavaScript 時，可直接填入座標（影像像素：x0,y0,x1,y1），或留白由系統自動框選。",
        "en": "The femoral neck is found for you and drawn as a box: drag it to move it, drag its lower right "
              "corner to resize it. Without JavaScript, type the box in image pixels (x0,y0,x1,y1), or leave it "
              "empty to use the box the system finds.",
    },
    "box_label": {"zh-TW": "框選座標 x0,y0,x1,y1", "en": "Box x0,y0,x1,y1"},
    "side_label": {"zh-TW": "側別", "en": "Side"},
    "side_auto": {"zh-TW": "自動", "en": "Automatic"},
    "side_L": {"zh-TW": "左側", "en": "Left"},
    "side_R": {"zh-TW": "右側", "en": "Right"},
    "locating": {"zh-TW": "正在尋找股骨頸…", "en": "Finding the femoral neck…"},
    "located": {"zh-TW": "已找到股骨頸（信心 {conf}）。", "en": "Femoral neck found (confidence {conf})."},
    "not_located": {"zh-TW": "未能可靠地找到股骨頸，請手動框選。", "en": "The femoral neck was not found reliably: please draw the box."},
    "selfcheck_heading": {"zh-TW": "3. 自我評估（選填）", "en": "3. Self-assessment (optional)"},
    "reference_label": {"zh-TW": "備註／病歷號（選填，只會出現在列印頁面，不會被保存）",
                        "en": "Reference (optional; shown on the printout only, never kept)"},
    "predict": {"zh-TW": "開始分析", "en": "Analyse"},
    "result_heading": {"zh-TW": "分析結果", "en": "Result"},
    "probability": {"zh-TW": "骨質疏鬆機率", "en": "Probability of osteoporosis"},
    "threshold": {"zh-TW": "判定閾值", "en": "Operating threshold"},
    "label_1": {"zh-TW": "疑似骨質疏鬆", "en": "Osteoporosis suspected"},
    "label_0": {"zh-TW": "未達骨質疏鬆判定", "en": "Osteoporosis not suspected"},
    "band_high": {"zh-TW": "風險高", "en": "High"},
    "band_intermediate": {"zh-TW": "風險中等", "en": "Intermediate"},
    "band_low": {"zh-TW": "風險低", "en": "Low"},
    "band_label": {"zh-TW": "風險分級", "en": "Band"},
    "warning": {
        "zh-TW": "模型判定可能有骨質疏鬆。請儘快就醫，並安排雙能量 X 光吸收儀（DEXA）骨密度檢查。",
        "en": "The model suggests osteoporosis. Please see a doctor soon and ask for a DEXA bone-density scan.",
    },
    "negative_note": {
        "zh-TW": "模型未判定為骨質疏鬆，但這不代表骨質正常；若有下方的風險因子，仍請諮詢醫師。",
        "en": "The model does not suggest osteoporosis, which does not mean the bone is healthy: with any of the "
              "risk factors below, still talk to a doctor.",
    },
    "heatmap_caption": {"zh-TW": "Grad-CAM 熱區圖：模型判斷時最關注的區域（紅色）",
                        "en": "Grad-CAM heat map: where the model looked most (red)"},
    "image_caption": {"zh-TW": "原始影像與分析的框選範圍", "en": "The whole image and the box that was analysed"},
    "box_source_user": {"zh-TW": "使用者框選", "en": "drawn by the user"},
    "box_source_model": {"zh-TW": "系統自動框選", "en": "found by the localiser"},
    "box_source_image": {"zh-TW": "整張影像（已是裁切圖）", "en": "whole image (already a crop)"},
    "model_line": {"zh-TW": "模型 {name} 版本 {version}（{runtime}）", "en": "Model {name} version {version} ({runtime})"},
    "localiser_line": {"zh-TW": "股骨頸定位模型 {localiser}", "en": "Femoral-neck localiser {localiser}"},
    "print": {"zh-TW": "列印結果", "en": "Print the result"},
    "again": {"zh-TW": "分析另一張影像", "en": "Analyse another image"},
    "booking_text": {"zh-TW": "預約門診與骨密度檢查", "en": "Book a clinic visit and a bone-density scan"},
    "osta_heading": {"zh-TW": "OSTA 亞洲人骨質疏鬆自我評估", "en": "OSTA (Osteoporosis Self-assessment Tool for Asians)"},
    "osta_about": {
        "zh-TW": "OSTA 指數 = 0.2 ×（體重公斤 − 年齡）。此工具以亞洲停經後婦女建立並驗證（Koh 等，2001）；"
                 "用於男性或其他族群時準確度較低。",
        "en": "OSTA index = 0.2 x (weight in kg - age in years). Derived and validated in postmenopausal Asian "
              "women (Koh et al., 2001); less accurate in men and other populations.",
    },
    "age_label": {"zh-TW": "年齡（歲）", "en": "Age (years)"},
    "weight_label": {"zh-TW": "體重（公斤）", "en": "Weight (kg)"},
    "sex_label": {"zh-TW": "性別", "en": "Sex"},
    "sex_female": {"zh-TW": "女性", "en": "Female"},
    "sex_male": {"zh-TW": "男性", "en": "Male"},
    "sex_none": {"zh-TW": "不填", "en": "Not given"},
    "osta_index": {"zh-TW": "OSTA 指數", "en": "OSTA index"},
    "osta_low": {"zh-TW": "低風險（指數大於 −1）", "en": "Low risk (index above -1)"},
    "osta_medium": {"zh-TW": "中度風險（指數 −1 至 −4）", "en": "Medium risk (index -1 to -4)"},
    "osta_high": {"zh-TW": "高風險（指數小於 −4）", "en": "High risk (index below -4)"},
    "osta_error_range": {"zh-TW": "年齡須為 18–120 歲、體重須為 20–300 公斤。",
                         "en": "Age must be 18-120 years and weight 20-300 kg."},
    "iof_heading": {"zh-TW": "IOF 一分鐘骨質疏鬆風險測驗", "en": "IOF one-minute osteoporosis risk test"},
    "iof_about": {
        "zh-TW": "國際骨質疏鬆基金會（IOF）的風險因子問卷，適用成年男女；它不是計分工具，"
                 "任何一題回答「是」即表示有風險因子，建議與醫師討論。",
        "en": "The International Osteoporosis Foundation's risk-factor questions, for adult women and men. "
              "It is not a score: any \"yes\" means risk factors are present and a talk with a doctor is worthwhile.",
    },
    "iof_yes": {"zh-TW": "是", "en": "Yes"},
    "iof_no": {"zh-TW": "否", "en": "No"},
    "iof_result_yes": {"zh-TW": "有 {n} 項風險因子，建議與醫師討論骨質健康。",
                       "en": "{n} risk factor(s) present: talk with a doctor about your bone health."},
    "iof_result_no": {"zh-TW": "回答的問題中沒有風險因子。", "en": "No risk factor among the questions answered."},
    "iof_women": {"zh-TW": "（女性）", "en": "(women)"},
    "iof_men": {"zh-TW": "（男性）", "en": "(men)"},
    "iof_parent_osteoporosis": {"zh-TW": "父母是否曾被診斷骨質疏鬆，或在輕微跌倒後骨折？",
                                "en": "Has either parent been diagnosed with osteoporosis or broken a bone after a minor fall?"},
    "iof_parent_stooped": {"zh-TW": "父母是否有駝背？", "en": "Did either parent have a stooped back?"},
    "iof_age_40_or_older": {"zh-TW": "您是否 40 歲以上？", "en": "Are you 40 or older?"},
    "iof_adult_fracture_minor_fall": {"zh-TW": "成年後是否曾在輕微跌倒後骨折？",
                                      "en": "As an adult, have you broken a bone after a minor fall?"},
    "iof_falls_often": {"zh-TW": "去年是否跌倒超過一次，或因虛弱而害怕跌倒？",
                        "en": "Did you fall more than once last year, or do you fear falling because you feel frail?"},
    "iof_height_loss_3cm": {"zh-TW": "40 歲後身高是否減少超過 3 公分？", "en": "Since 40, have you lost more than 3 cm of height?"},
    "iof_underweight": {"zh-TW": "是否體重過輕（BMI 小於 19）？", "en": "Are you underweight (BMI under 19)?"},
    "iof_steroids_3_months": {"zh-TW": "是否曾連續服用類固醇藥物超過 3 個月？",
                              "en": "Have you taken corticosteroid tablets for more than 3 months in a row?"},
    "iof_rheumatoid_arthritis": {"zh-TW": "是否曾被診斷類風濕性關節炎？", "en": "Have you been diagnosed with rheumatoid arthritis?"},
    "iof_overactive_thyroid_parathyroid": {"zh-TW": "是否曾被診斷甲狀腺或副甲狀腺功能亢進？",
                                           "en": "Have you been diagnosed with an overactive thyroid or parathyroid?"},
    "iof_menopause_before_45": {"zh-TW": "是否在 45 歲前停經？", "en": "Did your menopause come before 45?"},
    "iof_periods_stopped_12_months": {"zh-TW": "除懷孕、停經或子宮切除外，月經是否曾連續停止 12 個月以上？",
                                      "en": "Apart from pregnancy, menopause or hysterectomy, have your periods ever "
                                            "stopped for 12 months or more?"},
    "iof_ovaries_removed_before_50": {"zh-TW": "是否在 50 歲前切除卵巢且未接受荷爾蒙補充？",
                                      "en": "Were your ovaries removed before 50 without hormone replacement?"},
    "iof_low_testosterone": {"zh-TW": "是否有陽痿、性慾降低或其他睪固酮不足的症狀？",
                             "en": "Have you had impotence, low libido or other signs of low testosterone?"},
    "iof_alcohol_over_limit": {"zh-TW": "是否經常飲酒超過安全量？", "en": "Do you regularly drink more alcohol than the safe limit?"},
    "iof_smoker": {"zh-TW": "目前或過去是否吸菸？", "en": "Do you smoke, or have you ever smoked?"},
    "iof_activity_under_30min": {"zh-TW": "每天的身體活動是否少於 30 分鐘？", "en": "Are you active for less than 30 minutes a day?"},
    "iof_no_dairy_no_calcium": {"zh-TW": "是否不吃乳製品且未補充鈣質？",
                                "en": "Do you avoid dairy products without taking calcium supplements?"},
    "iof_outdoors_under_10min_no_vitd": {"zh-TW": "每天戶外日照是否少於 10 分鐘且未補充維生素 D？",
                                         "en": "Are you outdoors less than 10 minutes a day without vitamin D supplements?"},
    "frax_text": {"zh-TW": "FRAX 骨折風險評估（官方計算器；其演算法未公開，本系統不提供）",
                  "en": "FRAX fracture risk (the official calculator; its algorithm is not public, so it is not built in)"},
    "selfcheck_submit": {"zh-TW": "計算自我評估", "en": "Work out the self-assessment"},
    "your_answers": {"zh-TW": "您的自我評估", "en": "Your self-assessment"},
    "no_model_heading": {"zh-TW": "尚無可用的模型", "en": "No model is registered yet"},
    "no_model_text": {
        "zh-TW": "模型登錄庫中沒有 {uri}。請先執行 `make demo`（合成資料示範）或 `osteo train`，"
                 "服務會在一分鐘內自動載入新模型。",
        "en": "The model registry holds no {uri}. Run `make demo` (the synthetic demo) or `osteo train` first; "
              "the service picks the model up within a minute.",
    },
    "error_heading": {"zh-TW": "無法分析這個檔案", "en": "This file could not be analysed"},
    "csrf_error": {"zh-TW": "表單已過期，請重新整理頁面後再上傳。", "en": "The form has expired: reload the page and upload again."},
    "printed_on": {"zh-TW": "列印時間", "en": "Printed"},
    "manual_heading": {"zh-TW": "使用說明", "en": "User manual"},
}

# the manual's steps: (heading key, body key, screenshot file under docs/screenshots/ or "")
MANUAL_STEPS: tuple[tuple[str, str, str], ...] = (
    ("m1_h", "m1_b", "01-upload.png"),
    ("m2_h", "m2_b", "02-box.png"),
    ("m3_h", "m3_b", "03-result.png"),
    ("m4_h", "m4_b", "04-selfcheck.png"),
    ("m5_h", "m5_b", "05-print.png"),
    ("m6_h", "m6_b", ""),
)
TEXT.update({
    "m1_h": {"zh-TW": "步驟一：上傳影像", "en": "Step 1: upload the image"},
    "m1_b": {"zh-TW": "在「篩檢」頁按「選擇檔案」，選一張髖關節 X 光片（DICOM、PNG 或 JPEG）。"
                      "若影像已是股骨頸的裁切圖，請勾選下方的選項。",
             "en": "On the Screen page, press \"Choose file\" and pick a hip X-ray (DICOM, PNG or JPEG). If the image "
                   "is already a femoral-neck crop, tick the box below it."},
    "m2_h": {"zh-TW": "步驟二：確認框選", "en": "Step 2: check the box"},
    "m2_b": {"zh-TW": "系統會在影像上畫出股骨頸的框線（骨盆正面片會找兩側）。若位置不對，"
                      "用滑鼠拖曳框線移動，拖曳右下角調整大小。",
             "en": "A box is drawn around the femoral neck (both sides on a pelvis view). If it is off, drag it "
                   "to move it and drag its lower right corner to resize it."},
    "m3_h": {"zh-TW": "步驟三：看結果", "en": "Step 3: read the result"},
    "m3_b": {"zh-TW": "按「開始分析」。結果會顯示骨質疏鬆機率、判定與風險分級。若疑似骨質疏鬆，會出現紅色警示與"
                      "熱區圖（模型最關注的區域）。請記得：這只是篩檢輔助，不能取代 DEXA 骨密度檢查。",
             "en": "Press \"Analyse\". The result shows the probability of osteoporosis, the decision and a band. "
                   "When osteoporosis is suspected, a red warning and the heat map (where the model looked) appear. "
                   "Remember: this is a screening aid and does not replace a DEXA scan."},
    "m4_h": {"zh-TW": "步驟四：自我評估", "en": "Step 4: the self-assessment"},
    "m4_b": {"zh-TW": "填寫年齡與體重可算出 OSTA 指數；IOF 問題任何一題回答「是」表示有風險因子。"
                      "這些答案只用來顯示結果，不會被保存。",
             "en": "Age and weight give the OSTA index; any \"yes\" to the IOF questions means risk factors are "
                   "present. The answers are only used to show the result and are never kept."},
    "m5_h": {"zh-TW": "步驟五：列印或預約", "en": "Step 5: print or book"},
    "m5_b": {"zh-TW": "按「列印結果」可列印或存成 PDF（含結果、熱區圖、問卷答案與聲明），帶去門診；"
                      "或按「預約掛號」前往醫院的網路掛號。",
             "en": "Press \"Print the result\" to print it or save it as PDF (result, heat map, answers and the "
                   "notice) for your visit, or \"Book an appointment\" to go to the hospital's online booking."},
    "m6_h": {"zh-TW": "隱私", "en": "Privacy"},
    "m6_b": {"zh-TW": "上傳的影像只在記憶體中處理，不會被保存；稽核紀錄只保存影像的雜湊值、模型版本與結果，"
                      "不含姓名、病歷號或影像內容。",
             "en": "Uploads are processed in memory and not kept. The audit log keeps only the image's hash, the "
                   "model version and the result: no name, no record number, no pixels."},
})


# the API's error codes as the page says them (the API keeps its English `detail`)
TEXT.update({
    "err_too_large": {"zh-TW": "檔案太大，超過上傳上限。", "en": "The file is larger than the upload limit."},
    "err_unsupported_type": {"zh-TW": "這不是 DICOM、PNG 或 JPEG 檔案。", "en": "This is not a DICOM, PNG or JPEG file."},
    "err_not_a_form": {"zh-TW": "上傳格式不正確，請重新整理頁面。", "en": "The upload was not a form: reload the page."},
    "err_bad_form": {"zh-TW": "上傳不完整，請再試一次。", "en": "The upload was incomplete: try again."},
    "err_malformed_dicom": {"zh-TW": "無法讀取這個 DICOM 檔案。", "en": "This DICOM file could not be read."},
    "err_unsupported_dicom": {"zh-TW": "不支援這種 DICOM 影像（只接受 CR/DX 灰階 X 光片）。",
                              "en": "This kind of DICOM image is not supported (greyscale CR/DX radiographs only)."},
    "err_malformed_image": {"zh-TW": "無法讀取這個影像檔。", "en": "This image file could not be read."},
    "err_image_too_large": {"zh-TW": "影像尺寸太大，不像是 X 光片。", "en": "The image is too large to be a radiograph."},
    "err_image_too_small": {"zh-TW": "影像尺寸太小。", "en": "The image is too small."},
    "err_bad_box": {"zh-TW": "框選座標不正確：請填四個數字 x0,y0,x1,y1，且框至少 8 像素寬高。",
                    "en": "The box must be four numbers x0,y0,x1,y1, at least 8 pixels wide and high."},
    "err_box_outside_image": {"zh-TW": "框選範圍超出影像。", "en": "The box lies outside the image."},
    "err_invalid_request": {"zh-TW": "請求格式不正確。", "en": "The request is not valid."},
    "err_no_image": {"zh-TW": "請選擇一個影像檔。", "en": "Choose an image file."},
    "err_not_located": {"zh-TW": "未能可靠地找到股骨頸：請手動框選，或上傳股骨頸裁切圖。",
                        "en": "The femoral neck was not found reliably: draw the box, or upload a femoral-neck crop."},
    "err_no_localiser": {"zh-TW": "尚無股骨頸定位模型：請手動框選，或上傳股骨頸裁切圖。",
                         "en": "No femoral-neck localiser is registered: draw the box, or upload a femoral-neck crop."},
})


# the answering version's test-year figures (osteo_service.models.TestYear), on every page and the printout
TEXT.update({
    "test_line": {
        "zh-TW": "測試年度 {year}：AUC {auc}{ci}；骨質疏鬆敏感度 {recall}（n = {positives}）；"
                 "特異度 {specificity}（n = {negatives}）；共 {n} 張影像",
        "en": "Test year {year}: AUC {auc}{ci}; osteoporosis recall {recall} (n = {positives}); "
              "specificity {specificity} (n = {negatives}); {n} images",
    },
    "test_ci": {"zh-TW": "（95% 信賴區間 {lo}–{hi}）", "en": " (95% CI {lo}–{hi})"},
    "test_none": {"zh-TW": "此模型版本沒有測試年度的成績紀錄。", "en": "No test-year figures are recorded for this model version."},
})
TEXT.update(AUTH_TEXT)  # the sign-in pages (issue 26)
TEXT.update(REFERRAL_TEXT)  # the referral list (issue 27)
MISSING = "—"


def describe_test_year(t, figures) -> str:
    """The figures of a TestYear in words (`t`: a translator); a figure not recorded shows as a dash."""
    if figures is None:
        return t("test_none")

    def num(v, fmt: str) -> str:
        return MISSING if v is None else fmt.format(v)

    lo, hi = figures.auc_ci_low, figures.auc_ci_high  # a version trained before the interval was kept has none
    ci = "" if lo is None or hi is None else t("test_ci", lo=f"{lo:.2f}", hi=f"{hi:.2f}")
    return t("test_line", year=num(figures.year, "{}"), auc=num(figures.auc, "{:.3f}"), ci=ci,
             recall=num(figures.recall, "{:.1%}"), positives=num(figures.positives, "{}"),
             specificity=num(figures.specificity, "{:.1%}"), negatives=num(figures.negatives, "{}"),
             n=num(figures.n, "{}"))



def pick_lang(query: str | None, cookie: str | None) -> str:
    for value in (query, cookie):
        if value in LANGS:
            return value
    return DEFAULT_LANG


def translator(lang: str):
    """t(key, **values) for one language; an unknown key is an error (tests render every page)."""
    def t(key: str, **values) -> str:
        text = TEXT[key][lang]
        return text.format(**values) if values else text
    return t
