#pragma once
#include <spdlog/logger.h>
#include <sightline/features.hpp>
#include <sightline/index.hpp>
#include <sightline/result.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>

#include "sightline/host/decode.hpp"
#include "sightline/host/feature_record.hpp"
#include "sightline/host/gallery.hpp"
#include "sightline/host/metrics_registry.hpp"

namespace sightline::host {

class WorkerPool;

// How the homography is estimated from the correspondences: OpenCV's classic RANSAC, or its USAC
// framework (local optimisation and degeneracy checks; "magsac" scores with MAGSAC++).
enum class Estimator { ransac, usac, magsac };

struct VerifyParams {
    std::size_t candidates = 8;         // how many index candidates get a RANSAC check
    int min_inliers = 15;               // accept only with at least this many inliers
    double min_inlier_ratio = 0.2;      // ... and at least this share of the candidate's matches
    double reprojection_error = 5.0;    // RANSAC threshold, working-size pixels
    double min_area = 0.002;            // projected outline, as a share of the query image area
    // The inliers' convex hull in the reference, as a share of its area (0: no check). A chance
    // homography often fits a handful of points on one small patch of repeated structure (a
    // stroke of a line drawing, a corner of a chessboard); a true view spreads over the item.
    double min_inlier_area = 0.0;
    double max_scale_change = 8.0;      // sqrt(area ratio) of outline vs. reference, either way
    double max_aspect_change = 4.0;     // outline aspect vs. reference aspect, either way
    double max_side_ratio = 5.0;        // longest/shortest pair of opposite sides (perspective)
    // Match the query again against each candidate's own features (ratio test within that item)
    // before RANSAC. The index's gallery-wide ratio test keeps only matches that are unique in the
    // whole gallery, which leaves a small or blurred object with too few to verify.
    bool rematch = true;
    double rematch_ratio = 0.8;
    Estimator estimator = Estimator::usac;
    // Second look at a candidate whose homography has at least rectify_min_inliers inliers but
    // not enough to accept (0: off): the photo is warped into the reference's frame with that
    // homography, features are extracted there with the gallery's extractor and matched to the
    // reference's (its descriptors with rematch, else the index's Index::match_item), and a match
    // counts only if it lands within rectify_radius reference pixels of its partner. A blurred,
    // tilted, hazy object repeats far more of its reference keypoints once its perspective and
    // scale are undone; a chance homography finds next to nothing there.
    int rectify_min_inliers = 0;
    double rectify_radius = 6.0;
    // Only the first N candidates in the index's ranking get the second look (0: all): each one is
    // a feature extraction, and the true item, when the index found it, is nearly always among the
    // first.
    std::size_t rectify_candidates = 0;
    // Second looks also after a candidate has matched (a blurred object beside a clear one is then
    // found too, for the time of every weak candidate's extraction); otherwise they stop at the
    // first match, as they are there for the photos whose object the first looks missed.
    bool rectify_after_match = false;
    // When the items' descriptors are not in memory (rematch off), a candidate's fit is checked
    // against its reference's own descriptors, read from the gallery's feature record: a first
    // look's inliers count only where the query feature's nearest reference descriptor is its
    // partner and passes rematch_ratio, and a second look matches the rectified photo to them.
    // Word matches (index-vocab) agree by chance on smooth repeated texture; descriptors do not.
    bool confirm = false;
};

// A model fitted to a candidate's correspondences, reference -> query working pixels.
struct HomographyFit {
    cv::Mat H;  // empty if none was found
    int inliers = 0;
    std::size_t matches = 0;  // correspondences it was fitted to
    std::vector<cv::Point2f> inlier_reference;  // the inliers' points in the reference
    double ratio() const {
        return matches ? static_cast<double>(inliers) / static_cast<double>(matches) : 0;
    }
};

struct PipelineSettings {
    int working_size = 800;        // long side of a query image when features are extracted
    int gallery_size = 480;        // long side of a reference image when features are extracted
    // A query smaller than working_size is enlarged towards it by at most this factor: detail finer
    // than the detector's smallest scale then becomes detectable, which a small or distant object in
    // a low-resolution photo needs (SIFT doubles its input for the same reason). 1: never enlarged.
    double max_upscale = 1.0;
    std::size_t max_matches = 5;   // how many verified objects a result may list
    std::size_t search_features = 0;  // strongest query features sent to the index (0: all)
    int search_grid = 1;              // > 1: those are the strongest per cell of a grid x grid layout
    // Local contrast equalisation (CLAHE) before extraction, gallery and query alike: low-contrast,
    // hazy or dim objects otherwise lose the feature budget to a busy background.
    double clahe_clip = 0;  // 0: off
    VerifyParams verify;
    DecodeLimits limits;
    // Index snapshots: start-up loads the pipeline's snapshot and replays the gallery journal
    // after it, instead of reading every feature record. snapshot_tag names the whole pipeline
    // configuration (index keys too, which the signature omits): a snapshot made under another
    // tag is ignored and rebuilt.
    bool snapshots = true;
    std::string snapshot_tag;
};

// decode → normalise → extract → search → verify, for one extractor and one index; plus the
// gallery side: the index is filled from feature records, computing only what is missing.
class Pipeline {
public:
    // query_extractor: the same plugin as extractor, possibly with other parameters (more features);
    // null means extractor.
    Pipeline(std::string name, std::shared_ptr<FeatureExtractor> extractor,
             std::shared_ptr<FeatureExtractor> query_extractor, std::shared_ptr<Index> index,
             PipelineSettings settings, std::shared_ptr<spdlog::logger> logger, MetricsRegistry* metrics);

    const std::string& name() const { return name_; }
    const std::string& signature() const { return signature_; }
    const PipelineSettings& settings() const { return settings_; }
    std::size_t size() const { return index_ ? index_->size() : 0; }
    const FeatureExtractor& extractor() const { return *extractor_; }
    bool contains(const std::string& id) const {
        std::shared_lock lock(items_mutex_);
        return items_.count(id) > 0;
    }

    struct LoadStats {
        std::size_t loaded = 0, computed = 0, damaged = 0, failed = 0;
        bool from_snapshot = false;
        std::size_t replayed = 0;  // journal entries applied after the snapshot
        double seconds = 0;
    };
    using Progress = std::function<void(std::size_t done, std::size_t total)>;
    // Fills the index from the gallery: stored records under this signature are used as they are;
    // missing, damaged or foreign-signature ones are recomputed and stored.
    LoadStats load(Gallery& gallery, WorkerPool* pool = nullptr, const Progress& progress = {});
    // Writes the item table and the index to the gallery storage as of journal position
    // journal_seq. Call it when no change is in flight (start-up, shutdown): a change journaled
    // before journal_seq but not yet indexed would be missing from it.
    void save_snapshot(Gallery& gallery, std::uint64_t journal_seq) const;
    // Indexes one item (its record is reused if valid, else computed and stored).
    void add(Gallery& gallery, const std::string& id);
    bool remove(const std::string& id);

    // Features of a reference image at working size.
    FeatureRecord extract_item(const std::string& id, std::span<const std::uint8_t> image) const;
    // The same from an already decoded grayscale image (CV_8UC1, any size): bulk loaders and
    // benchmarks that make their own images skip the encode/decode round trip.
    FeatureRecord extract_item(const std::string& id, const cv::Mat& gray) const;
    // Indexes a record made by extract_item without touching the gallery storage (a benchmark's
    // in-memory gallery; the caller owns durability). Replaces the item if the id exists.
    void add_record(const FeatureRecord& record, std::string metadata_json = "{}");

    // Where confirming verification (VerifyParams::confirm) reads a reference's features: this
    // pipeline's records in a gallery (which must outlive it), or a benchmark's own records.
    // Unset, or no record: not confirmed.
    using ReferenceReader = std::function<std::optional<FeatureRecord>(const std::string& id)>;
    void set_reference_reader(ReferenceReader reader) { reference_reader_ = std::move(reader); }
    void read_references_from(const Gallery& gallery);

    // Never throws: a failure is reported in Result::error.
    Result recognize(const Request& request) const;
    // Throws Error on bad input; the result lists matches best first.
    Result recognize_or_throw(const Request& request) const;

private:
    struct ItemInfo {
        cv::Size size;
        std::string metadata;
        std::vector<cv::Point2f> points;  // kept for rematching only
        cv::Mat descriptors;
    };
    enum class RecordState { loaded, computed, damaged_recomputed };
    std::optional<std::uint64_t> load_snapshot(Gallery& gallery);
    RecordState ensure_indexed(Gallery& gallery, const std::string& id);
    // A stored record decoded, if it is this pipeline's record of `id` (nullopt: made under another
    // signature). Throws Error(data_loss) naming `key` if it is damaged.
    std::optional<FeatureRecord> own_record(const Bytes& bytes, const std::string& key,
                                            const std::string& id) const;
    void normalise(cv::Mat& gray) const;
    Index& index() const;  // throws if the host was built without indexes
    // A candidate after RANSAC on its correspondences: accepted (match), dropped (neither set), or
    // weak and worth a second look (item set; the correspondences and fit it was given).
    struct FirstLook {
        std::optional<Match> match;
        std::shared_ptr<const ItemInfo> item;
        Candidate candidate;
        HomographyFit fit;
    };
    FirstLook first_look(const Candidate& c, const Features& query, const cv::Mat& work,
                         double to_original, bool may_rectify) const;
    // A weak first look's second look (second_look), and if that fits, accept's checks.
    std::optional<Match> finish_look(const FirstLook& look, const cv::Mat& work,
                                     double to_original) const;
    void log_rejection(const Candidate& c, const char* why) const;  // debug: why a candidate failed
    // The checks every accepted fit passes (plausible outline, inliers spread over the item).
    std::optional<Match> accept(const Candidate& c, const ItemInfo& info, const HomographyFit& fit,
                                const cv::Mat& work, double to_original) const;
    // A candidate whose first look found too few inliers, looked at again in the photo rectified
    // into its reference's frame (VerifyParams::rectify_min_inliers); the accepted fit, if any.
    std::optional<HomographyFit> second_look(const Candidate& c, const ItemInfo& info,
                                             const cv::Mat& work, const HomographyFit& first) const;
    // Correspondences (query point, reference point) found in the photo rectified by H.
    std::vector<Correspondence> rectified_matches(const cv::Mat& work, const cv::Mat& H,
                                                  const std::string& id,
                                                  const ItemInfo& item) const;
    // The item with its descriptors: as held, or read through the reference reader when confirming
    // (VerifyParams::confirm); null if they cannot be had.
    std::shared_ptr<const ItemInfo> with_descriptors(
        const std::string& id, const std::shared_ptr<const ItemInfo>& item) const;
    bool confirming(const ItemInfo& item) const {
        return settings_.verify.confirm && item.descriptors.empty() && reference_reader_ != nullptr;
    }
    // How many of the fit's inliers the reference's descriptors confirm (VerifyParams::confirm).
    int confirmed_inliers(const Candidate& c, const HomographyFit& fit, const Features& query,
                          const ItemInfo& reference) const;
    // Per-candidate matching (ratio test, one query point per reference point); radius > 0 also
    // requires both points within radius of each other (features in the reference's frame).
    std::vector<Correspondence> rematch(const Features& query, const ItemInfo& item,
                                        double radius = 0) const;

    std::string name_;
    std::shared_ptr<FeatureExtractor> extractor_;
    std::shared_ptr<FeatureExtractor> query_extractor_;
    std::shared_ptr<Index> index_;
    PipelineSettings settings_;
    std::shared_ptr<spdlog::logger> log_;
    std::string signature_;
    mutable std::shared_mutex items_mutex_;
    std::map<std::string, std::shared_ptr<const ItemInfo>> items_;
    ReferenceReader reference_reader_;
    Histogram* stage_hist_[5] = {};
    Counter* recognitions_ = nullptr;
    Counter* matched_ = nullptr;
    Counter* rectified_ = nullptr;
    Counter* unconfirmed_ = nullptr;
    mutable std::atomic<bool> warned_unconfirmed_{false};
};

}  // namespace sightline::host
