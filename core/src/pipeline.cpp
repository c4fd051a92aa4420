#include "sightline/host/pipeline.hpp"

#include <sightline/keypoint_grid.hpp>

#include <opencv2/calib3d.hpp>
#include <opencv2/imgproc.hpp>

#include <bit>
#include <chrono>
#include <cmath>
#include <future>
#include <numeric>
#include <set>
#include <unordered_map>

#include "sightline/host/worker_pool.hpp"

#include <sightline/nearest.hpp>
#include <sightline/serialize.hpp>

#include <cstring>
#include <sstream>
#include <streambuf>

namespace sightline::host {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

const char* const kStages[5] = {"decode", "extract", "search", "verify", "total"};

void check_deadline(const Request& r, const char* stage) {
    if (Clock::now() > r.deadline)
        throw Error(ErrorCode::deadline_exceeded, std::string("the request ran out of time before ") + stage);
}

double side(const cv::Point2f& a, const cv::Point2f& b) { return std::hypot(a.x - b.x, a.y - b.y); }

std::vector<cv::Point2f> points_of(const Features& f) {
    std::vector<cv::Point2f> points;
    points.reserve(f.keypoints.size());
    for (const auto& k : f.keypoints) points.push_back(k.pt);
    return points;
}

std::optional<double> client_number(const Request& r, const char* key) {
    auto it = r.client_fields.find(key);
    if (it == r.client_fields.end()) return std::nullopt;
    try {
        std::size_t used = 0;
        double v = std::stod(it->second, &used);
        if (used != it->second.size() || !std::isfinite(v)) throw std::invalid_argument("x");
        return v;
    } catch (...) {
        throw Error(ErrorCode::invalid_argument, std::string("client field ") + key + " must be a number, found '" +
                                                     it->second + "'");
    }
}

// Reads a byte span as a stream without copying it (snapshots run to hundreds of megabytes).
class SpanBuf : public std::streambuf {
public:
    SpanBuf(const std::uint8_t* data, std::size_t size) {
        char* p = const_cast<char*>(reinterpret_cast<const char*>(data));
        setg(p, p, p + size);
    }
};

constexpr char kSnapshotMagic[4] = {'S', 'L', 'P', 'S'};
constexpr std::uint32_t kSnapshotVersion = 1;

}  // namespace

Pipeline::Pipeline(std::string name, std::shared_ptr<FeatureExtractor> extractor,
                   std::shared_ptr<FeatureExtractor> query_extractor, std::shared_ptr<Index> index,
                   PipelineSettings settings, std::shared_ptr<spdlog::logger> logger, MetricsRegistry* metrics)
    : name_(std::move(name)),
      extractor_(std::move(extractor)),
      query_extractor_(query_extractor ? std::move(query_extractor) : extractor_),
      index_(std::move(index)),
      settings_(settings),
      log_(std::move(logger)),
      signature_(extractor_->signature() + ";gallery_size=" + std::to_string(settings.gallery_size) +
                 (settings.clahe_clip > 0 ? ";clahe=" + std::to_string(settings.clahe_clip) : std::string())) {
    if (metrics) {
        const std::vector<double> buckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
        for (int i = 0; i < 5; ++i)
            stage_hist_[i] = &metrics->histogram("stage_seconds", "time spent per pipeline stage", buckets,
                                                 {{"pipeline", name_}, {"stage", kStages[i]}});
        recognitions_ = &metrics->counter("recognitions_total", "recognition requests", {{"pipeline", name_}});
        matched_ = &metrics->counter("recognitions_matched_total", "recognitions with at least one match",
                                     {{"pipeline", name_}});
        rectified_ = &metrics->counter("verify_rectifications_total",
                                       "second looks: photos rectified into a candidate's frame and extracted again",
                                       {{"pipeline", name_}});
        unconfirmed_ = &metrics->counter("verify_unconfirmed_total",
                                         "candidates verify.confirm could not check: no readable feature record",
                                         {{"pipeline", name_}});
    }
}

Index& Pipeline::index() const {
    if (!index_) throw Error(ErrorCode::internal, "pipeline " + name_ + " was built without its index");
    return *index_;
}

void Pipeline::normalise(cv::Mat& gray) const {
    if (settings_.clahe_clip <= 0) return;
    // Tiles of about 100 px, whatever the working size, so the equalisation is equally local.
    const int tiles = std::max(2, std::max(gray.cols, gray.rows) / 100);
    auto clahe = cv::createCLAHE(settings_.clahe_clip, cv::Size(tiles, tiles));
    cv::Mat out;
    clahe->apply(gray, out);
    gray = out;
}

FeatureRecord Pipeline::extract_item(const std::string& id, std::span<const std::uint8_t> image) const {
    DecodedImage decoded = decode_gray(image, settings_.limits, settings_.gallery_size);
    return extract_item(id, decoded.gray);
}

FeatureRecord Pipeline::extract_item(const std::string& id, const cv::Mat& gray) const {
    if (gray.empty() || gray.type() != CV_8UC1)
        throw Error(ErrorCode::invalid_argument, "gallery item '" + id + "': expected a non-empty 8-bit grayscale image");
    cv::Mat work;
    resize_to_working(gray, work, settings_.gallery_size);
    normalise(work);
    FeatureRecord rec;
    rec.signature = signature_;
    rec.item_id = id;
    rec.image_size = work.size();
    rec.features = extractor_->extract(work);
    if (rec.features.keypoints.size() != static_cast<std::size_t>(rec.features.descriptors.rows) &&
        !rec.features.descriptors.empty())
        throw Error(ErrorCode::internal, "the extractor returned " + std::to_string(rec.features.keypoints.size()) +
                                             " keypoints but " + std::to_string(rec.features.descriptors.rows) +
                                             " descriptors");
    return rec;
}

std::optional<FeatureRecord> Pipeline::own_record(const Bytes& bytes, const std::string& key,
                                                const std::string& id) const {
    auto r = decode_record(bytes, key);
    if (r.signature == signature_ && r.item_id == id) return r;
    return std::nullopt;
}

void Pipeline::read_references_from(const Gallery& gallery) {
    reference_reader_ = [this, &gallery](const std::string& id) -> std::optional<FeatureRecord> {
        auto bytes = gallery.record(signature_, id);
        if (!bytes) return std::nullopt;
        return own_record(*bytes, gallery.record_key(signature_, id), id);
    };
}

Pipeline::RecordState Pipeline::ensure_indexed(Gallery& gallery, const std::string& id) {
    RecordState state = RecordState::computed;
    std::optional<FeatureRecord> rec;
    if (auto bytes = gallery.record(signature_, id)) {
        try {
            rec = own_record(*bytes, gallery.record_key(signature_, id), id);
            if (rec)
                state = RecordState::loaded;
            else
                log_->info("{}: made under another signature; recomputing", gallery.record_key(signature_, id));
        } catch (const std::exception& e) {
            log_->warn("{}; recomputing it", e.what());
            state = RecordState::damaged_recomputed;
        }
    }
    std::string metadata;
    if (!rec) {
        auto item = gallery.item(id);
        if (!item) throw Error(ErrorCode::not_found, "gallery item '" + id + "' has no image");
        rec = extract_item(id, item->image);
        auto bytes = encode_record(*rec);
        gallery.put_record(signature_, id, bytes);
        metadata = std::move(item->metadata);
    } else {
        metadata = gallery.metadata(id);
    }
    add_record(*rec, std::move(metadata));
    return state;
}

void Pipeline::add_record(const FeatureRecord& rec, std::string metadata_json) {
    index().add(rec.item_id, rec.features);
    auto info = std::make_shared<ItemInfo>(ItemInfo{rec.image_size, std::move(metadata_json), {}, {}});
    if (settings_.verify.rematch) {
        info->descriptors = rec.features.descriptors;
        info->points = points_of(rec.features);
    }
    std::unique_lock lock(items_mutex_);
    items_[rec.item_id] = std::move(info);
}

void Pipeline::save_snapshot(Gallery& gallery, std::uint64_t journal_seq) const {
    const auto t0 = Clock::now();
    std::ostringstream payload;
    BinaryWriter w(payload);
    w.string(signature_);
    w.string(settings_.snapshot_tag);
    w.pod<std::uint64_t>(journal_seq);
    {
        std::shared_lock lock(items_mutex_);
        w.pod<std::uint64_t>(items_.size());
        for (const auto& [id, info] : items_) {
            w.string(id);
            w.pod<std::int32_t>(info->size.width);
            w.pod<std::int32_t>(info->size.height);
            w.string(info->metadata);
            w.pod<std::uint32_t>(static_cast<std::uint32_t>(info->points.size()));
            for (const auto& p : info->points) {
                w.pod(p.x);
                w.pod(p.y);
            }
            w.mat(info->descriptors);
        }
    }
    index().save(payload);
    const std::string body = payload.str();
    std::string file;
    file.reserve(body.size() + 24);
    file.append(kSnapshotMagic, 4);
    auto append = [&](const auto& v) { file.append(reinterpret_cast<const char*>(&v), sizeof v); };
    append(kSnapshotVersion);
    append(static_cast<std::uint64_t>(body.size()));
    append(fnv1a64(body.data(), body.size()));
    file += body;
    const std::string key = gallery.snapshot_key(signature_);
    gallery.storage().put(key, std::span(reinterpret_cast<const std::uint8_t*>(file.data()), file.size()));
    log_->info("pipeline {}: snapshot of {} items written to {} ({:.1f} MB, {:.0f} ms)", name_, size(), key,
               static_cast<double>(file.size()) / 1e6, ms_since(t0));
}

std::optional<std::uint64_t> Pipeline::load_snapshot(Gallery& gallery) {
    const std::string key = gallery.snapshot_key(signature_);
    auto bytes = gallery.storage().get(key);
    if (!bytes) return std::nullopt;
    auto refuse = [&](const std::string& why) -> std::optional<std::uint64_t> {
        log_->warn("{}: {}; rebuilding the index from the feature records", key, why);
        return std::nullopt;
    };
    if (bytes->size() < 24 || std::memcmp(bytes->data(), kSnapshotMagic, 4) != 0) return refuse("not a pipeline snapshot");
    std::uint32_t version;
    std::uint64_t size, sum;
    std::memcpy(&version, bytes->data() + 4, 4);
    std::memcpy(&size, bytes->data() + 8, 8);
    std::memcpy(&sum, bytes->data() + 16, 8);
    if (version != kSnapshotVersion) return refuse("snapshot version " + std::to_string(version) + " is not supported");
    if (size != bytes->size() - 24) return refuse("truncated");
    if (fnv1a64(bytes->data() + 24, size) != sum) return refuse("checksum mismatch (damaged)");
    SpanBuf buf(bytes->data() + 24, size);
    std::istream in(&buf);
    try {
        BinaryReader r(in, key);
        if (r.string() != signature_) return refuse("made under another signature");
        if (r.string() != settings_.snapshot_tag) return refuse("made under another pipeline configuration");
        const auto seq = r.pod<std::uint64_t>();
        const auto n = r.pod<std::uint64_t>();
        std::map<std::string, std::shared_ptr<const ItemInfo>> items;
        for (std::uint64_t i = 0; i < n; ++i) {
            auto info = std::make_shared<ItemInfo>();
            std::string id = r.string(4096);
            info->size.width = r.pod<std::int32_t>();
            info->size.height = r.pod<std::int32_t>();
            info->metadata = r.string(64u << 20);
            const auto np = r.pod<std::uint32_t>();
            if (np > (1u << 22)) r.fail("implausible point count");
            info->points.resize(np);
            for (auto& p : info->points) {
                p.x = r.pod<float>();
                p.y = r.pod<float>();
            }
            info->descriptors = r.mat();
            if (settings_.verify.rematch != !info->descriptors.empty() && np > 0)
                return refuse("made with verify.rematch " + std::string(settings_.verify.rematch ? "off" : "on"));
            items.emplace(std::move(id), std::move(info));
        }
        index().load(in);
        if (index().size() != items.size())
            return refuse("index holds " + std::to_string(index().size()) + " items but the table " +
                          std::to_string(items.size()));
        std::unique_lock lock(items_mutex_);
        items_ = std::move(items);
        return seq;
    } catch (const std::exception& e) {
        return refuse(e.what());
    }
}

Pipeline::LoadStats Pipeline::load(Gallery& gallery, WorkerPool* pool, const Progress& progress) {
    const auto t0 = Clock::now();
    if (settings_.snapshots) {
        if (auto seq = load_snapshot(gallery)) {
            LoadStats stats;
            stats.from_snapshot = true;
            stats.loaded = size();
            // Replay by gallery state, each id once, in journal order of its last change.
            auto entries = gallery.journal_since(*seq);
            std::map<std::string, std::uint64_t> last;
            for (const auto& e : entries) last[e.id] = e.seq;
            std::vector<std::pair<std::uint64_t, std::string>> order;
            for (const auto& [id, at] : last) order.emplace_back(at, id);
            std::sort(order.begin(), order.end());
            for (const auto& [_, id] : order) {
                try {
                    if (gallery.contains(id)) {
                        if (ensure_indexed(gallery, id) != RecordState::loaded) ++stats.computed;
                    } else {
                        remove(id);
                    }
                    ++stats.replayed;
                } catch (const std::exception& e) {
                    ++stats.failed;
                    log_->error("gallery item '{}' could not be indexed: {}", id, e.what());
                }
            }
            stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
            log_->info("pipeline {}: {} items from the snapshot in {:.2f} s, {} journal changes replayed", name_,
                       size(), stats.seconds, stats.replayed);
            if (progress) progress(1, 1);
            return stats;
        }
    }
    auto ids = gallery.ids();
    LoadStats stats;
    std::size_t done = 0;
    auto account = [&](const std::string& id, std::function<RecordState()> get) {
        try {
            switch (get()) {
                case RecordState::loaded: ++stats.loaded; break;
                case RecordState::computed: ++stats.computed; break;
                case RecordState::damaged_recomputed: ++stats.damaged; ++stats.computed; break;
            }
        } catch (const std::exception& e) {
            ++stats.failed;
            log_->error("gallery item '{}' could not be indexed: {}", id, e.what());
        }
        ++done;
        if (progress) progress(done, ids.size());
    };
    if (!pool) {
        for (const auto& id : ids) account(id, [&] { return ensure_indexed(gallery, id); });
    } else {
        std::vector<std::future<RecordState>> futures;
        futures.reserve(ids.size());
        for (const auto& id : ids) futures.push_back(pool->submit([this, &gallery, id] { return ensure_indexed(gallery, id); }));
        for (std::size_t i = 0; i < ids.size(); ++i) account(ids[i], [&] { return futures[i].get(); });
    }
    stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    log_->info("pipeline {}: {} items ({} from stored records, {} computed, {} damaged records, {} failed) in {:.2f} s",
               name_, size(), stats.loaded, stats.computed, stats.damaged, stats.failed, stats.seconds);
    return stats;
}

void Pipeline::add(Gallery& gallery, const std::string& id) { ensure_indexed(gallery, id); }

bool Pipeline::remove(const std::string& id) {
    bool removed = index().remove(id);
    std::unique_lock lock(items_mutex_);
    items_.erase(id);
    return removed;
}

std::vector<Correspondence> Pipeline::rematch(const Features& query, const ItemInfo& item,
                                              double radius) const {
    std::vector<Correspondence> out;
    if (query.descriptors.empty() || item.descriptors.rows < 2 ||
        query.descriptors.type() != item.descriptors.type() ||
        query.descriptors.cols != item.descriptors.cols ||
        query.keypoints.size() != static_cast<std::size_t>(query.descriptors.rows) ||
        item.points.size() != static_cast<std::size_t>(item.descriptors.rows))
        return out;
    cv::Mat dist, idx;  // per query row: the two nearest item rows and their distances
    nearest_two(query.descriptors, item.descriptors, dist, idx);
    const float ratio = static_cast<float>(settings_.verify.rematch_ratio);
    // One query keypoint per gallery keypoint: the closest wins (a repeated texture otherwise
    // piles many query points onto one reference point and fakes inliers).
    std::vector<int> best_for(static_cast<std::size_t>(item.descriptors.rows), -1);
    std::vector<float> best_dist(static_cast<std::size_t>(item.descriptors.rows), 0);
    for (int r = 0; r < dist.rows; ++r) {
        const float d1 = dist.at<float>(r, 0), d2 = dist.at<float>(r, 1);
        const int nearest = idx.at<int>(r, 0);
        if (nearest < 0 || idx.at<int>(r, 1) < 0 || d1 >= ratio * d2) continue;
        auto t = static_cast<std::size_t>(nearest);
        if (radius > 0 &&
            cv::norm(query.keypoints[static_cast<std::size_t>(r)].pt - item.points[t]) > radius)
            continue;
        if (best_for[t] < 0 || d1 < best_dist[t]) {
            best_for[t] = r;
            best_dist[t] = d1;
        }
    }
    for (std::size_t t = 0; t < best_for.size(); ++t)
        if (best_for[t] >= 0)
            out.push_back({query.keypoints[static_cast<std::size_t>(best_for[t])].pt,
                           item.points[t], best_dist[t]});
    return out;
}

namespace {

void split(const std::vector<Correspondence>& matches, std::vector<cv::Point2f>& src,
           std::vector<cv::Point2f>& dst) {
    src.reserve(matches.size());
    dst.reserve(matches.size());
    for (const auto& m : matches) {
        src.push_back(m.gallery);
        dst.push_back(m.query);
    }
}

HomographyFit fit_homography(const std::vector<Correspondence>& matches, const VerifyParams& v) {
    std::vector<cv::Point2f> src, dst;
    split(matches, src, dst);
    std::vector<unsigned char> mask;
    const int method = v.estimator == Estimator::ransac   ? cv::RANSAC
                       : v.estimator == Estimator::magsac ? cv::USAC_MAGSAC
                                                          : cv::USAC_ACCURATE;
    HomographyFit fit;
    fit.matches = matches.size();
    fit.H = cv::findHomography(src, dst, method, v.reprojection_error, mask, 2000, 0.995);
    if (fit.H.empty()) return fit;
    // RANSAC's model comes from 4 points; refit on all inliers (least squares + Levenberg-Marquardt)
    // and re-collect them, so the outline is as good as every inlier makes it.
    for (int round = 0; round < 3; ++round) {
        std::vector<cv::Point2f> s_in, d_in;
        for (std::size_t i = 0; i < mask.size(); ++i)
            if (mask[i]) {
                s_in.push_back(src[i]);
                d_in.push_back(dst[i]);
            }
        if (s_in.size() < 8) break;
        cv::Mat refined = cv::findHomography(s_in, d_in, 0);
        if (refined.empty()) break;
        std::vector<cv::Point2f> projected;
        cv::perspectiveTransform(src, projected, refined);
        std::vector<unsigned char> refined_mask(src.size());
        for (std::size_t i = 0; i < src.size(); ++i)
            refined_mask[i] = cv::norm(projected[i] - dst[i]) <= v.reprojection_error ? 1 : 0;
        if (cv::countNonZero(refined_mask) < cv::countNonZero(mask)) break;
        const bool same = refined_mask == mask;
        fit.H = refined;
        mask = std::move(refined_mask);
        if (same) break;
    }
    fit.inliers = cv::countNonZero(mask);
    for (std::size_t i = 0; i < mask.size(); ++i)
        if (mask[i]) fit.inlier_reference.push_back(src[i]);
    return fit;
}

// A similarity (rotation, scale, shift) as a 3x3 matrix: it needs two matches per hypothesis
// instead of a homography's four, so it still finds a handful of true matches among many false
// ones, where the homography fits a wrong model (typically one that "crosses the horizon").
HomographyFit fit_similarity(const std::vector<Correspondence>& matches, const VerifyParams& v) {
    std::vector<cv::Point2f> src, dst;
    split(matches, src, dst);
    std::vector<unsigned char> kept;
    HomographyFit fit;
    fit.matches = matches.size();
    const cv::Mat A = cv::estimateAffinePartial2D(src, dst, kept, cv::RANSAC, v.reprojection_error,
                                                  2000, 0.995, 10);
    if (A.empty()) return fit;
    fit.H = cv::Mat::eye(3, 3, CV_64F);
    A.copyTo(fit.H.rowRange(0, 2));
    fit.inliers = cv::countNonZero(kept);
    for (std::size_t i = 0; i < kept.size(); ++i)
        if (kept[i]) fit.inlier_reference.push_back(src[i]);
    return fit;
}

std::vector<cv::Point2f> outline(const cv::Mat& H, cv::Size ref) {
    const float w = static_cast<float>(ref.width), h = static_cast<float>(ref.height);
    std::vector<cv::Point2f> corners{{0, 0}, {w, 0}, {w, h}, {0, h}}, quad;
    cv::perspectiveTransform(corners, quad, H);
    return quad;
}

// Why no photo of a flat object could produce this homography, or nullptr if one could.
const char* implausible(const cv::Mat& H, cv::Size ref, cv::Size query, const VerifyParams& v) {
    const auto quad = outline(H, ref);
    const double w = ref.width, h = ref.height;
    for (const auto& p : quad)
        if (!std::isfinite(p.x) || !std::isfinite(p.y)) return "outline at infinity";
    // A perspective image of a plane stays on one side of the horizon: all denominators positive.
    for (const auto& p :
         {cv::Point2d(0, 0), cv::Point2d(w, 0), cv::Point2d(w, h), cv::Point2d(0, h)}) {
        double den = H.at<double>(2, 0) * p.x + H.at<double>(2, 1) * p.y + H.at<double>(2, 2);
        if (den <= 0) return "outline crosses the horizon";
    }
    if (!cv::isContourConvex(quad)) return "outline not convex";  // also self-crossing ones
    const double area = std::abs(cv::contourArea(quad));
    if (area < v.min_area * static_cast<double>(query.area())) return "outline too small";
    const double scale = std::sqrt(area / (w * h));
    if (scale > v.max_scale_change || scale < 1.0 / v.max_scale_change)
        return "scale change too large";
    const double top = side(quad[0], quad[1]), right = side(quad[1], quad[2]), bottom = side(quad[2], quad[3]),
                 left = side(quad[3], quad[0]);
    if (std::min({top, right, bottom, left}) < 1e-3) return "degenerate outline";
    if (std::max(top, bottom) / std::min(top, bottom) > v.max_side_ratio ||
        std::max(left, right) / std::min(left, right) > v.max_side_ratio)
        return "perspective too extreme";
    const double aspect = ((top + bottom) / (left + right)) / (w / h);
    if (aspect > v.max_aspect_change || aspect < 1.0 / v.max_aspect_change)
        return "aspect change too large";
    return nullptr;
}

// The share of the reference's area inside the convex hull of the fit's inliers.
double inlier_cover(const HomographyFit& fit, cv::Size ref) {
    if (fit.inlier_reference.size() < 3 || ref.area() <= 0) return 0.0;
    std::vector<cv::Point2f> hull;
    cv::convexHull(fit.inlier_reference, hull);
    return cv::contourArea(hull) / static_cast<double>(ref.area());
}

// The index's word matches in the reference's frame that land within `radius` of their gallery
// point, one-to-one, closest signature first (as rematch keeps one query point per gallery point).
std::vector<Correspondence> nearby(std::vector<Correspondence> matches, double radius) {
    std::erase_if(matches,
                  [&](const Correspondence& m) { return cv::norm(m.query - m.gallery) > radius; });
    std::stable_sort(
        matches.begin(), matches.end(),
        [](const Correspondence& a, const Correspondence& b) { return a.distance < b.distance; });
    auto key = [](cv::Point2f p) { return std::pair{p.x, p.y}; };
    std::set<std::pair<float, float>> query_used, gallery_used;
    std::vector<Correspondence> out;
    for (const auto& m : matches)
        if (!query_used.count(key(m.query)) && !gallery_used.count(key(m.gallery))) {
            query_used.insert(key(m.query));
            gallery_used.insert(key(m.gallery));
            out.push_back(m);
        }
    return out;
}

}  // namespace

std::vector<Correspondence> Pipeline::rectified_matches(const cv::Mat& work, const cv::Mat& H,
                                                        const std::string& id,
                                                        const ItemInfo& item) const {
    const bool own = item.descriptors.rows >= 2;
    if (!own && !index().can_match_item()) return {};
    const auto quad = outline(H, item.size);
    const cv::Rect box = cv::boundingRect(quad) & cv::Rect(0, 0, work.cols, work.rows);
    if (box.width < 2 || box.height < 2) return {};
    // Only the part of the photo under the outline is read; shrinking it by more than ~1.5x
    // without a low-pass would alias, so it is smoothed first in proportion.
    cv::Mat source = work(box);
    const double scale = std::sqrt(std::abs(cv::contourArea(quad)) / item.size.area());
    if (scale > 1.5) {
        cv::Mat smoothed;
        cv::GaussianBlur(source, smoothed, cv::Size(), 0.5 * std::sqrt(scale * scale - 1));
        source = smoothed;
    }
    const cv::Mat to_box = (cv::Mat_<double>(3, 3) << 1, 0, -box.x, 0, 1, -box.y, 0, 0, 1);
    cv::Mat rectified;
    cv::warpPerspective(source, rectified, to_box * H, item.size,
                        cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_REPLICATE);
    // Matched in the reference's frame, then carried into the photo's by H.
    const Features found = extractor_->extract(rectified);
    auto out = own ? rematch(found, item, settings_.verify.rectify_radius)
                   : nearby(index().match_item(id, found), settings_.verify.rectify_radius);
    if (out.empty()) return out;
    std::vector<cv::Point2f> in_reference, in_query;
    for (const auto& m : out) in_reference.push_back(m.query);
    cv::perspectiveTransform(in_reference, in_query, H);
    for (std::size_t i = 0; i < out.size(); ++i) out[i].query = in_query[i];
    return out;
}

std::shared_ptr<const Pipeline::ItemInfo> Pipeline::with_descriptors(
    const std::string& id, const std::shared_ptr<const ItemInfo>& item) const {
    if (!item->descriptors.empty()) return item;
    if (!reference_reader_) return nullptr;
    std::optional<FeatureRecord> record;
    std::string why = "it has no feature record";
    try {
        record = reference_reader_(id);
    } catch (const std::exception& e) {
        why = std::string("its feature record could not be read: ") + e.what();
    }
    if (!record || record->features.descriptors.rows < 2) {
        // Warned once (a gallery without records would say it on every request), counted always.
        if (unconfirmed_) unconfirmed_->inc();
        const auto level = warned_unconfirmed_.exchange(true) ? spdlog::level::debug : spdlog::level::warn;
        log_->log(level,
                  "candidate {} is judged on the index's matches alone, not confirmed: {} (further "
                  "cases at debug level; verify_unconfirmed_total counts them)",
                  id, why);
        return nullptr;
    }
    return std::make_shared<ItemInfo>(
        ItemInfo{item->size, item->metadata, points_of(record->features), record->features.descriptors});
}

int Pipeline::confirmed_inliers(const Candidate& c, const HomographyFit& fit, const Features& query,
                                const ItemInfo& reference) const {
    const auto& v = settings_.verify;
    const auto key = [](cv::Point2f p) {
        return (static_cast<std::uint64_t>(std::bit_cast<std::uint32_t>(p.x)) << 32) |
               std::bit_cast<std::uint32_t>(p.y);
    };
    std::unordered_map<std::uint64_t, int> row_at;
    row_at.reserve(query.keypoints.size());
    for (std::size_t r = 0; r < query.keypoints.size(); ++r)
        row_at.emplace(key(query.keypoints[r].pt), static_cast<int>(r));
    std::vector<cv::Point2f> gallery, projected;
    for (const auto& m : c.correspondences) gallery.push_back(m.gallery);
    cv::perspectiveTransform(gallery, projected, fit.H);
    std::vector<int> rows;
    std::vector<cv::Point2f> partner;
    for (std::size_t i = 0; i < c.correspondences.size(); ++i) {
        const auto& m = c.correspondences[i];
        if (cv::norm(projected[i] - m.query) > v.reprojection_error) continue;
        auto it = row_at.find(key(m.query));
        if (it == row_at.end()) continue;
        rows.push_back(it->second);
        partner.push_back(m.gallery);
    }
    if (rows.empty() || query.descriptors.type() != reference.descriptors.type() ||
        query.descriptors.cols != reference.descriptors.cols)
        return 0;
    cv::Mat q(static_cast<int>(rows.size()), query.descriptors.cols, query.descriptors.type());
    for (std::size_t i = 0; i < rows.size(); ++i)
        query.descriptors.row(rows[i]).copyTo(q.row(static_cast<int>(i)));
    cv::Mat dist, idx;
    nearest_two(q, reference.descriptors, dist, idx);
    const float ratio = static_cast<float>(v.rematch_ratio);
    // A partner that is the nearest reference descriptor but fails the ratio test is counted too,
    // for the debug log: how far off a rejected candidate was.
    int confirmed = 0, nearest = 0;
    for (int i = 0; i < dist.rows; ++i) {
        const int t = idx.at<int>(i, 0);
        if (t < 0 || idx.at<int>(i, 1) < 0 ||
            cv::norm(reference.points[static_cast<std::size_t>(t)] -
                     partner[static_cast<std::size_t>(i)]) > 1.0)
            continue;
        ++nearest;
        if (dist.at<float>(i, 0) < ratio * dist.at<float>(i, 1)) ++confirmed;
    }
    log_->debug(
        "candidate {}: {} of {} inliers confirmed by its descriptors ({} nearest to their partner)",
        c.id, confirmed, fit.inliers, nearest);
    return confirmed;
}

std::optional<HomographyFit> Pipeline::second_look(const Candidate& c, const ItemInfo& info,
                                                   const cv::Mat& work,
                                                   const HomographyFit& first) const {
    const auto& v = settings_.verify;
    // Rectify with the first look's homography if it is plausible, and with a similarity.
    std::vector<cv::Mat> guesses;
    if (first.inliers >= v.rectify_min_inliers && !implausible(first.H, info.size, work.size(), v))
        guesses.push_back(first.H);
    const HomographyFit similarity = fit_similarity(c.correspondences, v);
    if (!similarity.H.empty() && similarity.inliers >= v.rectify_min_inliers &&
        !implausible(similarity.H, info.size, work.size(), v))
        guesses.push_back(similarity.H);
    // A guess that finds some but too few matches is refined once: the homography of those
    // matches rectifies better than the guess did. At most four rectifications per candidate.
    constexpr std::size_t kMaxGuesses = 4;
    for (std::size_t g = 0; g < guesses.size() && g < kMaxGuesses; ++g) {
        if (rectified_) rectified_->inc();
        const auto found = rectified_matches(work, guesses[g], c.id, info);
        log_->debug("candidate {}: {} matches in the rectified photo", c.id, found.size());
        if (found.size() < static_cast<std::size_t>(std::max(4, v.rectify_min_inliers))) continue;
        HomographyFit f = fit_homography(found, v);
        if (f.H.empty()) continue;
        log_->debug("candidate {}: {} inliers of {} matches in the rectified photo", c.id,
                    f.inliers, found.size());
        if (f.inliers >= v.min_inliers && f.ratio() >= v.min_inlier_ratio) return f;
        if (f.inliers >= v.rectify_min_inliers && guesses.size() < kMaxGuesses &&
            !implausible(f.H, info.size, work.size(), v))
            guesses.push_back(f.H);
    }
    return std::nullopt;
}

Pipeline::FirstLook Pipeline::first_look(const Candidate& candidate, const Features& query,
                                         const cv::Mat& work, double to_original,
                                         bool may_rectify) const {
    const auto& v = settings_.verify;
    FirstLook look;
    const Candidate* cp = &candidate;
    auto reject = [&](const char* why) {
        log_rejection(*cp, why);
        return FirstLook{};
    };
    std::shared_ptr<const ItemInfo> item;  // shared: verification copies no reference data
    {
        std::shared_lock lock(items_mutex_);
        auto it = items_.find(candidate.id);
        if (it == items_.end()) return reject("removed meanwhile");
        item = it->second;
    }
    const ItemInfo& info = *item;
    Candidate rematched;
    if (v.rematch && !info.descriptors.empty()) {
        rematched.id = candidate.id;
        rematched.score = candidate.score;
        rematched.correspondences = rematch(query, info);
        cp = &rematched;
    }
    const Candidate& c = *cp;
    const bool rectify = may_rectify && v.rectify_min_inliers > 0 && v.rectify_min_inliers < v.min_inliers &&
                         (!info.descriptors.empty() || index().can_match_item());
    const int least = std::max(4, rectify ? v.rectify_min_inliers : v.min_inliers);
    if (c.correspondences.size() < static_cast<std::size_t>(least))
        return reject("fewer correspondences than min_inliers");
    HomographyFit fit = fit_homography(c.correspondences, v);
    if (fit.H.empty()) return reject("no homography");
    // Weak: worth a second look, with `reference` (the item, or it with its read descriptors).
    auto weak = [&](std::shared_ptr<const ItemInfo> reference) {
        look.item = std::move(reference);
        look.candidate = cp == &rematched ? std::move(rematched) : candidate;
        look.fit = std::move(fit);
        return look;
    };
    if (fit.inliers < v.min_inliers || fit.ratio() < v.min_inlier_ratio) {
        log_->debug("candidate {}: {} inliers of {} correspondences", c.id, fit.inliers,
                    c.correspondences.size());
        if (!rectify) return reject("too few inliers");
        return weak(std::move(item));
    }
    if (confirming(info)) {
        if (auto ref = with_descriptors(c.id, item)) {
            if (confirmed_inliers(c, fit, query, *ref) < v.min_inliers) {
                if (!rectify)
                    return reject("too few inliers confirmed by the reference's descriptors");
                return weak(std::move(ref));
            }
        }
    }
    look.match = accept(c, info, fit, work, to_original);
    return look;
}

std::optional<Match> Pipeline::finish_look(const FirstLook& look, const cv::Mat& work,
                                           double to_original) const {
    std::shared_ptr<const ItemInfo> item = look.item;
    if (confirming(*item))
        if (auto ref = with_descriptors(look.candidate.id, item)) item = std::move(ref);
    auto fit = second_look(look.candidate, *item, work, look.fit);
    if (!fit) {
        log_rejection(look.candidate, "too few inliers after rectifying");
        return std::nullopt;
    }
    return accept(look.candidate, *look.item, *fit, work, to_original);
}

void Pipeline::log_rejection(const Candidate& c, const char* why) const {
    log_->debug("candidate {} ({} correspondences) rejected: {}", c.id, c.correspondences.size(),
                why);
}

std::optional<Match> Pipeline::accept(const Candidate& c, const ItemInfo& info,
                                      const HomographyFit& fit, const cv::Mat& work,
                                      double to_original) const {
    const auto& v = settings_.verify;
    auto reject = [&](const char* why) -> std::optional<Match> {
        log_rejection(c, why);
        return std::nullopt;
    };
    if (const char* why = implausible(fit.H, info.size, work.size(), v)) return reject(why);
    const double cover = inlier_cover(fit, info.size);
    if (cover < v.min_inlier_area) return reject("inliers cover too little of the reference");
    const auto quad = outline(fit.H, info.size);
    log_->debug("candidate {} accepted: {} inliers of {}, inlier hull {:.4f} of the reference", c.id, fit.inliers,
                fit.matches, cover);

    Match m;
    m.id = c.id;
    m.inliers = fit.inliers;
    m.score = fit.ratio();
    for (int i = 0; i < 4; ++i) m.polygon[static_cast<std::size_t>(i)] = quad[static_cast<std::size_t>(i)] * static_cast<float>(to_original);
    m.metadata_json = info.metadata;
    return m;
}

Result Pipeline::recognize_or_throw(const Request& request) const {
    const auto t0 = Clock::now();
    Result result;
    result.request_id = request.id;
    result.variant = name_;

    auto t = Clock::now();
    DecodedImage decoded = decode_gray(request.image, settings_.limits, settings_.working_size);
    cv::Mat work;
    double resize = resize_to_working(decoded.gray, work, settings_.working_size, settings_.max_upscale);
    const double to_original = 1.0 / (decoded.scale * resize);
    normalise(work);
    result.timings_ms["decode"] = ms_since(t);
    check_deadline(request, "feature extraction");

    t = Clock::now();
    Features features = query_extractor_->extract(work);
    result.timings_ms["extract"] = ms_since(t);
    check_deadline(request, "search");

    t = Clock::now();
    auto candidates = index().search(strongest_features(features, settings_.search_features, work.size(), settings_.search_grid),
                                     settings_.verify.candidates);
    result.timings_ms["search"] = ms_since(t);
    if (log_->should_log(spdlog::level::debug)) {
        // What the index proposed, for "why was my item not found?": ranked, with scores.
        std::string ranked;
        for (std::size_t i = 0; i < candidates.size(); ++i)
            ranked += fmt::format("{}{}={:.4g}", i ? " " : "", candidates[i].id, candidates[i].score);
        log_->debug("request '{}': {} candidates: {}", request.id, candidates.size(), ranked);
    }
    check_deadline(request, "verification");

    t = Clock::now();
    // First looks at every candidate, then second looks (each a feature extraction) at the weak
    // ones in ranking order; unless rectify_after_match, only while nothing has matched.
    const std::size_t rectify_first = settings_.verify.rectify_candidates;
    std::vector<FirstLook> weak;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        FirstLook look = first_look(candidates[i], features, work, to_original,
                                    rectify_first == 0 || i < rectify_first);
        if (look.match)
            result.matches.push_back(std::move(*look.match));
        else if (look.item)
            weak.push_back(std::move(look));
    }
    for (std::size_t i = 0; i < weak.size(); ++i) {
        if (!settings_.verify.rectify_after_match && !result.matches.empty()) {
            log_->debug("request '{}': {} second looks skipped, a candidate matched", request.id,
                        weak.size() - i);
            break;
        }
        check_deadline(request, "verification");
        if (auto m = finish_look(weak[i], work, to_original))
            result.matches.push_back(std::move(*m));
    }
    std::sort(result.matches.begin(), result.matches.end(),
              [](const Match& a, const Match& b) { return a.inliers != b.inliers ? a.inliers > b.inliers : a.id < b.id; });
    auto px = client_number(request, "pos_x"), py = client_number(request, "pos_y");
    if (px && py) {
        // The object the user pointed at ranks first; the others keep their order.
        std::stable_partition(result.matches.begin(), result.matches.end(), [&](const Match& m) {
            std::vector<cv::Point2f> poly(m.polygon.begin(), m.polygon.end());
            return cv::pointPolygonTest(poly, cv::Point2f(static_cast<float>(*px), static_cast<float>(*py)), false) >= 0;
        });
    }
    if (result.matches.size() > settings_.max_matches) result.matches.resize(settings_.max_matches);
    result.timings_ms["verify"] = ms_since(t);
    result.timings_ms["total"] = ms_since(t0);
    if (stage_hist_[0])
        for (int i = 0; i < 5; ++i) stage_hist_[i]->observe(result.timings_ms[kStages[i]] / 1000.0);
    if (matched_ && !result.matches.empty()) matched_->inc();
    return result;
}

Result Pipeline::recognize(const Request& request) const {
    if (recognitions_) recognitions_->inc();
    try {
        return recognize_or_throw(request);
    } catch (const Error& e) {
        Result r;
        r.request_id = request.id;
        r.variant = name_;
        r.error = ErrorInfo{to_string(e.code()), e.what()};
        return r;
    } catch (const std::exception& e) {
        Result r;
        r.request_id = request.id;
        r.variant = name_;
        r.error = ErrorInfo{"internal", std::string("internal error: ") + e.what()};
        return r;
    }
}

}  // namespace sightline::host
