// sr_content.cc — the content tree of the SR: a TID 1500 Imaging
// Measurement Report shaped as IHE AI Results (AIR) describes, built with
// DCMTK's low-level DSRDocumentTree so that every row is ours to order
// (DCMTK 3.6.7's TID1500_MeasurementReport has no TID 4019 rows in its TID
// 1501 groups and insists on a TID 300 measurement in each). The tree, row
// by row with every code, is in docs/conformance.md ("SR content").
#include "sr_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/codes/dcm.h"
#include "dcmtk/dcmsr/codes/sct.h"
#include "dcmtk/dcmsr/codes/umls.h"
#include "dcmtk/dcmsr/dsrcodvl.h"
#include "dcmtk/dcmsr/dsrdoctr.h"
#include "dcmtk/dcmsr/dsrimgvl.h"
#include "dcmtk/dcmsr/dsrnumvl.h"

namespace cxr_sr
{
namespace
{

// Codes DCMTK 3.6.7 does not define (SNOMED CT, LOINC, UCUM, RFC 5646 as
// PS3.16 lists them), and our one private code (declared in the Coding
// Scheme Identification Sequence by sr_writer.cc).
const DSRCodedEntryValue kPneumonia("233604007", "SCT", "Pneumonia");
const DSRCodedEntryValue kLung("39607008", "SCT", "Lung");
const DSRCodedEntryValue kPresent("52101004", "SCT", "Present");
const DSRCodedEntryValue kAbsent("2667000", "SCT", "Absent");
const DSRCodedEntryValue kEnglish("en", "RFC5646", "English");
const DSRCodedEntryValue kXrChestSingleView("36554-4", "LN", "XR Chest Single view");
const DSRCodedEntryValue kPercent("%", "UCUM", "%");
const DSRCodedEntryValue kTriagePriority("TRIAGEPRIORITY", "99CXRTRIAGE", "Triage priority");

// Adds content items one after another and remembers the first failure
// (later calls do nothing), so the builder below reads like the template.
class Builder
{
  public:
    Builder(DSRDocumentTree &tree, std::string &what) : tree_(tree), what_(what) {}

    bool ok() const { return ok_; }
    // A new item below (child) or after (sibling) the current one.
    void child(DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType vt,
               const DSRCodedEntryValue &name, const char *row)
    {
        if (ok_)
            check(tree_.addChildContentItem(rel, vt, name), row);
    }
    void next(DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType vt,
              const DSRCodedEntryValue &name, const char *row)
    {
        if (ok_)
            check(tree_.addContentItem(rel, vt, name), row);
    }
    // An item without concept name (IMAGE in TID 1601).
    void add_unnamed(DSRTypes::E_AddMode mode, DSRTypes::E_RelationshipType rel,
                     DSRTypes::E_ValueType vt, const char *row)
    {
        if (ok_ && tree_.addContentItem(rel, vt, mode) == 0)
            failed(row, "relationship not allowed by the IOD");
    }
    void up()
    {
        if (ok_ && tree_.goUp() == 0)
            failed("cursor", "no parent");
    }
    void text(const std::string &v, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setStringValue(v.c_str()), row);
    }
    void code(const DSRCodedEntryValue &v, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setCodeValue(v), row);
    }
    void num(const std::string &value, const DSRCodedEntryValue &unit, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setNumericValue(
                      DSRNumericMeasurementValue(value.c_str(), unit)),
                  row);
    }
    // A NUM with no value: an empty Measured Value Sequence and the reason
    // as Numeric Value Qualifier (PS3.3 C.18.1, CID 42).
    void not_measured(const DSRCodedEntryValue &qualifier, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setNumericValue(
                      DSRNumericMeasurementValue(qualifier)),
                  row);
    }
    void image(const Image &im, const char *row)
    {
        if (ok_)
            // The source's UIDs exactly as the PACS knows them (see the evidence
            // sequence in sr_writer.cc): DCMTK's stricter UID check is off.
            check(tree_.getCurrentContentItem().setImageReference(
                      DSRImageReferenceValue(im.sop_class_uid.c_str(), im.sop_instance_uid.c_str(),
                                             OFFalse),
                      OFFalse),
                  row);
    }
    void name(const DSRCodedEntryValue &v, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setConceptName(v), row);
    }
    void template_id(const char *tid, const char *row)
    {
        if (ok_)
            check(tree_.getCurrentContentItem().setTemplateIdentification(
                      tid, "DCMR", UID_DICOMContentMappingResource),
                  row);
    }

  private:
    void check(const OFCondition &c, const char *row)
    {
        if (c.bad())
            failed(row, c.text());
    }
    void failed(const char *row, const char *why)
    {
        ok_ = false;
        what_ = std::string(row) + ": " + why;
    }

    DSRDocumentTree &tree_;
    std::string &what_;
    bool ok_ = true;
};

// TID 1501 Measurement Group for one image (analysed or not): the first one below
// Imaging Measurements (the cursor is there), later ones after the previous
// group (the cursor is there). Leaves the cursor on the new group.
void measurement_group(Builder &b, const Plan &plan, const Image &im, bool first)
{
    if (first)
        b.child(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_MeasurementGroup,
                "TID 1501 row 1 Measurement Group");
    else
        b.next(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_MeasurementGroup,
               "TID 1501 row 1 Measurement Group");
    b.template_id("1501", "TID 1501 template identification");
    b.child(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_TrackingIdentifier,
            "TID 1501 Tracking Identifier");
    b.text(im.tracking_id, "TID 1501 Tracking Identifier value");
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_UIDRef, CODE_DCM_TrackingUniqueIdentifier,
           "TID 1501 Tracking Unique Identifier");
    b.text(im.tracking_uid, "TID 1501 Tracking Unique Identifier value");
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Code, CODE_DCM_Finding, "TID 1501 Finding");
    b.code(kPneumonia, "TID 1501 Finding value");
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Code, CODE_SCT_FindingSite,
           "TID 1501 Finding Site");
    b.code(kLung, "TID 1501 Finding Site value");
    // TID 4019 Algorithm Identification, included by TID 1501 as HAS CONCEPT MOD
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmName,
           "TID 4019 Algorithm Name");
    b.text(plan.algorithm_name, "TID 4019 Algorithm Name value");
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmVersion,
           "TID 4019 Algorithm Version");
    b.text(plan.algorithm_version, "TID 4019 Algorithm Version value");
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmParameters,
           "TID 4019 Algorithm Parameters (model)");
    b.text("model SHA-256: " + plan.model_sha256, "TID 4019 Algorithm Parameters value");
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmParameters,
           "TID 4019 Algorithm Parameters (threshold)");
    b.text("operating threshold: " + plan.threshold_text +
               " (finding present when the probability of pneumonia is at or above it)",
           "TID 4019 Algorithm Parameters value");
    // TID 300 Measurement: the certainty, inferred from the source image (TID
    // 320). An image that was not analysed keeps the row with no value and the
    // Numeric Value Qualifier (114007, DCM, "Measurement not attempted") of
    // CID 42, so a viewer shows that the image was seen and not measured.
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Num, CODE_DCM_CertaintyOfFinding,
           "TID 300 Certainty of Finding");
    if (im.analysed)
        b.num(percent_text(im.probability), kPercent, "TID 300 Certainty of Finding value");
    else
        b.not_measured(CODE_DCM_MeasurementNotAttempted, "TID 300 Numeric Value Qualifier");
    b.child(DSRTypes::RT_inferredFrom, DSRTypes::VT_Image, CODE_DCM_SourceOfMeasurement,
            "TID 320 Source of Measurement");
    b.image(im, "TID 320 Source of Measurement reference");
    b.up();
    if (!im.analysed) {
        // no qualitative evaluation: nothing was evaluated; the reason as text
        b.next(DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Comment, "TID 1501 Comment");
        b.text("not analysed: " + im.reason, "TID 1501 Comment value");
        b.up();
        return;
    }
    // qualitative evaluation: is pneumonia present at the operating threshold?
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Code, kPneumonia, "TID 1501 Qualitative Evaluation");
    b.code(im.present ? kPresent : kAbsent, "TID 1501 Qualitative Evaluation value");
    if (!im.warning.empty()) {
        b.next(DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Comment, "TID 1501 Comment");
        b.text(im.warning, "TID 1501 Comment value");
    }
    b.up();
}

} // namespace

bool build_content(const Plan &plan, DSRDocumentTree &tree, std::string &what)
{
    Builder b(tree, what);
    // TID 1500 row 1
    if (tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
        what = "TID 1500 row 1: cannot add the root container";
        return false;
    }
    b.name(CODE_DCM_ImagingMeasurementReport, "TID 1500 row 1 concept name");
    b.template_id("1500", "TID 1500 template identification");
    // TID 1204 language
    b.child(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Code,
            CODE_DCM_LanguageOfContentItemAndDescendants, "TID 1204 Language");
    b.code(kEnglish, "TID 1204 Language value");
    // TID 1001 -> 1002 -> 1004: the observer is this device
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_Code, CODE_DCM_ObserverType,
           "TID 1002 Observer Type");
    b.code(CODE_DCM_Device, "TID 1002 Observer Type value");
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_UIDRef, CODE_DCM_DeviceObserverUID,
           "TID 1004 Device Observer UID");
    b.text(plan.device_observer_uid, "TID 1004 Device Observer UID value");
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverName,
           "TID 1004 Device Observer Name");
    b.text(plan.device_name, "TID 1004 Device Observer Name value");
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverManufacturer,
           "TID 1004 Device Observer Manufacturer");
    b.text(plan.manufacturer, "TID 1004 Device Observer Manufacturer value");
    b.next(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverModelName,
           "TID 1004 Device Observer Model Name");
    b.text(plan.model_name, "TID 1004 Device Observer Model Name value");
    // TID 1500 row 4
    b.next(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Code, CODE_DCM_ProcedureReported,
           "TID 1500 Procedure reported");
    b.code(kXrChestSingleView, "TID 1500 Procedure reported value");
    // TID 1600 Image Library: one group, one IMAGE (TID 1601) per source image
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_ImageLibrary,
           "TID 1600 Image Library");
    b.child(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_ImageLibraryGroup,
            "TID 1600 Image Library Group");
    for (size_t i = 0; i < plan.images.size(); i++) {
        b.add_unnamed(i == 0 ? DSRTypes::AM_belowCurrent : DSRTypes::AM_afterCurrent,
                      DSRTypes::RT_contains, DSRTypes::VT_Image, "TID 1601 Image Library Entry");
        b.image(plan.images[i], "TID 1601 Image Library Entry reference");
    }
    b.up(); // to the group
    b.up(); // to the library
    // TID 1500 row 6: Imaging Measurements, one TID 1501 group per image
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_ImagingMeasurements,
           "TID 1500 Imaging Measurements");
    for (size_t i = 0; i < plan.images.size(); i++)
        measurement_group(b, plan, plan.images[i], i == 0);
    b.up(); // to Imaging Measurements
    // TID 1500 row 10: Qualitative Evaluations, the study's triage priority
    b.next(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_UMLS_QualitativeEvaluations,
           "TID 1500 Qualitative Evaluations");
    b.child(DSRTypes::RT_contains, DSRTypes::VT_Text, kTriagePriority,
            "TID 1500 Qualitative Evaluation (triage priority)");
    b.text(plan.priority_name, "TID 1500 triage priority value");
    return b.ok();
}

} // namespace cxr_sr
