// sightline-bench-scale — how recognition holds up as the gallery grows (docs/bench.md).
//
// A gallery of P "true" items (real photographs) plus distractors — real images and distinct crops
// of real images from Debian-packaged image sets — is built in memory (Pipeline::extract_item +
// Pipeline::add_record, no gallery storage) up to each of --sizes in turn; at every size the same
// seeded phone-photo queries (bench/synth) go through Pipeline::recognize, and accuracy, latency,
// memory, add rate and index snapshot times are reported as one JSON object.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "sightline/host/feature_record.hpp"

namespace sightline::host {
class Pipeline;
}

namespace sightline::bench {

struct ScaleOptions : ConfigOptions {
    std::string pipeline;  // empty: the config's default pipeline
    std::vector<std::size_t> sizes{1000, 10000, 100000};
    std::size_t true_items = 200;
    std::size_t queries = 200;
    std::size_t negatives = 100;
    std::uint64_t seed = 1;
    std::size_t threads = 0;      // extraction threads; 0: one per core
    std::size_t concurrency = 1;  // query threads
    std::string true_dir;
    std::vector<std::string> distractor_dirs;  // empty: the default Debian package paths that exist
    std::vector<std::string> negative_dirs;    // empty: the default Debian package paths that exist
    int photo_width = 1024, photo_height = 768;
    std::size_t snapshot_checks = 20;  // positives re-run on the snapshot-loaded pipeline
    bool snapshot = true;
    bool parallel_add = false;  // add_record from the extraction threads (order varies between runs)
    std::string out_file;
    std::string mistakes_csv;
    std::string save_gallery_dir;  // writes every distractor image made (small runs: to look at them)
    std::string features_cache;    // feature records kept between runs (build_increment says how they are keyed)
    bool plan_only = false;  // print the gallery plan and stop
    bool pretty = false;
};

// Set by SIGINT/SIGTERM: the build stops, the sizes done so far are reported.
extern std::atomic<bool> g_stop;

// ---- the gallery plan (sources.cpp)

// One distractor source image (a file), after de-duplication.
struct Source {
    fs::path file;
    cv::Size size;    // as stored (before EXIF orientation; the bench decodes ignoring it)
    std::string id;   // item id of the whole image; crops are <id>.c<k>
    bool crops = false;  // large enough to cut crops from
};

// One distractor: a whole source image (crop < 0) or its crop number `crop`.
struct Distractor {
    std::uint32_t source = 0;
    std::int32_t crop = -1;
    cv::Rect2f rect;  // crop rectangle as fractions of the source's width and height
    bool mirrored = false;
};

struct TrueItem {
    std::string id;
    fs::path file;
    std::string metadata = "{}";
};

struct SourceStats {
    std::size_t scanned = 0;          // image files under the distractor dirs
    std::size_t protected_ = 0;       // dropped: a true item's or a negative's file (or its 2x copy)
    std::size_t duplicates = 0;       // dropped: byte-identical to another file
    std::size_t variants = 0;         // dropped: another size/frame/variant of a kept image
    std::size_t too_small = 0;        // dropped: shorter side under kMinWholeSide
    std::size_t unreadable = 0;       // dropped: no readable image header
    std::size_t crop_sources = 0;     // kept sources large enough for crops
};

struct Plan {
    std::vector<TrueItem> true_items;
    std::vector<fs::path> negative_pool;  // images in neither the gallery nor the distractor sources
    std::size_t held_out = 0;             // of those, true-dir images kept out of the gallery
    std::vector<Source> sources;
    std::vector<Distractor> distractors;  // in gallery order: whole images first, then crops
    std::size_t wholes = 0;               // distractors[0..wholes) are whole images
    std::size_t exhausted_sources = 0;    // crop sources that ran out of distinct crops
    SourceStats stats;
    std::vector<std::string> true_dirs, distractor_dirs, negative_dirs;
    std::uint64_t seed = 0;  // the crops drawn depend on it

    std::string distractor_id(std::size_t i) const;
    // "file" or "file crop x,y,w,h[ mirrored]" (pixels), for the mistakes CSV.
    std::string describe(const std::string& id) const;
};

constexpr int kMinWholeSide = 100;        // shorter side of a whole-image distractor, pixels
constexpr int kMinCropSourceSide = 256;   // shorter side of an image crops are cut from
constexpr double kCropMin = 0.25, kCropMax = 0.70;  // crop side as a share of the source's side
constexpr double kCropAspectMin = 0.5, kCropAspectMax = 2.0;
constexpr double kCropMaxIoU = 0.5;       // between two crops of one source
constexpr int kCropTries = 1000;          // draws per crop before a source counts as exhausted

std::vector<std::string> default_distractor_dirs();
std::vector<std::string> default_negative_dirs();
std::string default_true_dir();

// Scans, de-duplicates and plans `distractors_needed` distractors from the seed.
Plan make_plan(const ScaleOptions& o, std::size_t distractors_needed);

// The distractor image for the pipeline: 8-bit grey; a crop is cut (and mirrored) from `source`
// (the decoded source, grey) and resized so that its long side is `gallery_size`.
cv::Mat distractor_image(const Distractor& d, const cv::Mat& source, int gallery_size);
// The source decoded to grey, EXIF orientation ignored (the plan's fractions refer to the stored
// pixels). Throws when it cannot be decoded.
cv::Mat decode_source(const fs::path& file);

// ---- building (build.cpp)

struct BuildStats {
    std::size_t added = 0, failed = 0;
    double seconds = 0;             // wall time: decode + crop + extract + add_record
    double add_record_seconds = 0;  // time inside Pipeline::add_record (summed over threads when parallel)
    std::vector<std::string> failures;  // the first few "id: reason"
    bool interrupted = false;
};

// The directory of `features_cache` that keeps this pipeline's and plan's records (created);
// empty when there is no cache.
fs::path records_dir(const host::Pipeline& pipeline, const Plan& plan,
                     const fs::path& features_cache);
// The record of `id` made under `signature` in such a directory, if it holds a sound one.
std::optional<host::FeatureRecord> read_record(const fs::path& dir, const std::string& id,
                                               const std::string& signature);

// Adds distractors [from, to) (and the true items first when add_true) to the pipeline: the images
// are made and their features extracted on `threads` threads; the records are added in plan order
// from the calling thread, or by the workers themselves when parallel_add. `save_dir` (optional)
// receives every distractor image as <id>.png; `records` (optional, from records_dir) keeps every
// record, and those it holds are used instead of extracting again.
BuildStats build_increment(host::Pipeline& pipeline, const Plan& plan, bool add_true,
                           std::size_t from, std::size_t to, std::size_t threads, bool parallel_add,
                           const fs::path& save_dir = {}, const fs::path& records = {});
// <dir>/gallery.tsv: id, kind (true/whole/crop), source file, crop x,y,w,h in source pixels, mirrored
// — for the first `items` of the plan's gallery order.
void write_gallery_tsv(const fs::path& dir, const Plan& plan, std::size_t items);

}  // namespace sightline::bench
