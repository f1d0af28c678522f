// gaussian_rasterize_plugin.cpp: TensorRT IPluginV3 "dd3g::GaussianRasterize" (version "1") over the C API of
// libdd3g_raster (cuda/include/dd3g_raster.h). Same node and attributes as export/dd3g_export/plugin.py:
//   inputs  0 means [N,3]  1 quats [N,4]  2 scales [N,3]  3 opacities [N]  4 sh [N,K,3]   (float32 or float16)
//           5 viewmats [C,4,4]  6 Ks [C,3,3]  7 background [C,3]                          (float32)
//   outputs 0 rgb [C,H,W,3]  1 alpha [C,H,W,1]  2 depth [C,H,W,1]                         (float32)
//   fields  width, height (int), near_plane, far_plane, eps2d (float), max_intersections, tight_tiles (int)
// The plugin asks TensorRT for the library's workspace (getWorkspaceSize at the profile's maximum N and C) and
// enqueue() only enqueues: no allocation, no synchronisation.
//
// Built by the top-level CMakeLists.txt with -DDD3G_BUILD_TRT_PLUGIN=ON -DTENSORRT_ROOT=<folder with include/>
// (cuda/plugin/build_plugin.sh). It needs TensorRT's headers only: it implements interfaces and calls no TensorRT
// function, so it links no TensorRT library, and one build serves TensorRT (libnvinfer) and TensorRT-RTX
// (libtensorrt_rtx) alike. Entry points (extern "C"):
//   getCreators, setLoggerFinder     what IPluginRegistry::loadLibrary (Python: registry.load_library) looks up
//                                    (getPluginCreators, the entry point for V2 creators, is not provided)
//   dd3gRegisterTrtPlugin(registry)  for applications that link this library: pass getPluginRegistry()
// DD3G_PLUGIN_TRACE=1 prints one "[dd3g plugin] C++ ..." line per callback to stderr (to locate a failure).
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dd3g_raster.h"

namespace dd3g_trt {

using namespace nvinfer1;

constexpr char const* kName = "GaussianRasterize";
constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "dd3g";
constexpr int32_t kInputs = 8;
constexpr int32_t kOutputs = 3;

// ---- diagnostics. Errors go to stderr, not to the ILogger behind setLoggerFinder's ILoggerFinder: that class
// changed its layout between TensorRT 10 (a plain class) and 11 (an IVersionedInterface), so a call through it
// would only be right where the headers match the loading TensorRT. DD3G_PLUGIN_TRACE=1 adds one line per call.
bool traceOn() {
    static bool const on = [] {
        char const* v = std::getenv("DD3G_PLUGIN_TRACE");
        return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
    }();
    return on;
}

void printLine(char const* prefix, char const* fmt, va_list ap) {
    char line[1024];
    std::vsnprintf(line, sizeof(line), fmt, ap);
    std::fprintf(stderr, "%s%s\n", prefix, line);
    std::fflush(stderr);
}

__attribute__((format(printf, 1, 2))) void trace(char const* fmt, ...) {
    if (!traceOn()) return;
    va_list ap;
    va_start(ap, fmt);
    printLine("[dd3g plugin] C++ ", fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 1, 2))) void logError(char const* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printLine("dd3g::GaussianRasterize: ", fmt, ap);
    va_end(ap);
}

struct Attributes {
    int32_t width = 1, height = 1;
    float near_plane = 0.01f, far_plane = 1e10f, eps2d = 0.3f;
    int32_t max_intersections = 0;
    int32_t tight_tiles = 1;
};

// A number from a PluginField of any numeric type (the ONNX parser passes ints as INT32 or INT64).
bool fieldNumber(PluginField const& f, double* out) {
    if (f.data == nullptr || f.length < 1) return false;
    switch (f.type) {
        case PluginFieldType::kINT32: *out = static_cast<int32_t const*>(f.data)[0]; return true;
        case PluginFieldType::kINT64: *out = (double)static_cast<int64_t const*>(f.data)[0]; return true;
        case PluginFieldType::kINT16: *out = static_cast<int16_t const*>(f.data)[0]; return true;
        case PluginFieldType::kINT8: *out = static_cast<int8_t const*>(f.data)[0]; return true;
        case PluginFieldType::kFLOAT32: *out = static_cast<float const*>(f.data)[0]; return true;
        case PluginFieldType::kFLOAT64: *out = static_cast<double const*>(f.data)[0]; return true;
        default: return false;
    }
}

Attributes parseFields(PluginFieldCollection const* fc) {
    Attributes a;
    if (fc == nullptr) return a;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        double v = 0;
        if (f.name == nullptr || !fieldNumber(f, &v)) continue;
        std::string n(f.name);
        if (n == "width") a.width = (int32_t)v;
        else if (n == "height") a.height = (int32_t)v;
        else if (n == "near_plane") a.near_plane = (float)v;
        else if (n == "far_plane") a.far_plane = (float)v;
        else if (n == "eps2d") a.eps2d = (float)v;
        else if (n == "max_intersections") a.max_intersections = (int32_t)v;
        else if (n == "tight_tiles") a.tight_tiles = (int32_t)v;
    }
    return a;
}

dd3g_raster_config makeConfig(Attributes const& a, int64_t n, int32_t c, int32_t k, bool half) {
    dd3g_raster_config cfg{};
    cfg.struct_size = sizeof(cfg);
    cfg.dtype = half ? DD3G_FLOAT16 : DD3G_FLOAT32;
    cfg.num_gaussians = n;
    cfg.num_cameras = c;
    cfg.width = a.width;
    cfg.height = a.height;
    cfg.sh_coeffs = k;
    cfg.max_intersections = a.max_intersections;
    cfg.near_plane = a.near_plane;
    cfg.far_plane = a.far_plane;
    cfg.eps2d = a.eps2d;
    cfg.flags = a.tight_tiles ? DD3G_RASTER_TIGHT_TILES : 0u;
    return cfg;
}

class GaussianRasterizePlugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild,
                                public IPluginV3OneRuntime {
public:
    explicit GaussianRasterizePlugin(Attributes const& a) : mAttr(a) { buildSerialFields(); }
    ~GaussianRasterizePlugin() override { trace("~plugin %p", static_cast<void*>(this)); }

    // ---- IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        trace("getCapabilityInterface %d", static_cast<int>(type));
        switch (type) {
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override {
        try {
            auto* p = new GaussianRasterizePlugin(mAttr);
            p->mN = mN;
            p->mC = mC;
            p->mK = mK;
            p->mHalf = mHalf;
            trace("clone %p -> %p", static_cast<void*>(this), static_cast<void*>(p));
            return p;
        } catch (...) {
            return nullptr;
        }
    }

    // ---- IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    // ---- IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return kOutputs; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        trace("configurePlugin inputs=%d outputs=%d", nbInputs, nbOutputs);
        return (in != nullptr && nbInputs == kInputs && nbOutputs == kOutputs) ? 0 : -1;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*, int32_t nbInputs)
        const noexcept override {
        trace("getOutputDataTypes inputs=%d outputs=%d", nbInputs, nbOutputs);
        if (nbOutputs != kOutputs || nbInputs != kInputs) return -1;
        for (int32_t i = 0; i < kOutputs; ++i) outputTypes[i] = DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                            DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& b) noexcept override {
        trace("getOutputShapes inputs=%d outputs=%d", nbInputs, nbOutputs);
        if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[5].nbDims != 3) return -1;
        int32_t const last[kOutputs] = {3, 1, 1};
        for (int32_t i = 0; i < kOutputs; ++i) {
            outputs[i].nbDims = 4;
            outputs[i].d[0] = inputs[5].d[0];  // C
            outputs[i].d[1] = b.constant(mAttr.height);
            outputs[i].d[2] = b.constant(mAttr.width);
            outputs[i].d[3] = b.constant(last[i]);
        }
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != kInputs || nbOutputs != kOutputs || pos < 0 || pos >= kInputs + kOutputs) return false;
        PluginTensorDesc const& d = inOut[pos].desc;
        trace("supportsFormatCombination pos=%d type=%d format=%d", pos, static_cast<int>(d.type),
              static_cast<int>(d.format));
        if (d.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return d.type == DataType::kFLOAT || d.type == DataType::kHALF;
        if (pos < 5) return d.type == inOut[0].desc.type;  // Gaussian attributes share the dtype of means
        return d.type == DataType::kFLOAT;                 // cameras, background, outputs
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        if (nbInputs != kInputs) return 0;
        dd3g_raster_config cfg = makeConfig(mAttr, inputs[0].max.d[0], (int32_t)inputs[5].max.d[0],
                                            (int32_t)inputs[4].max.d[1], inputs[0].desc.type == DataType::kHALF);
        size_t bytes = 0;
        int const st = dd3g_raster_workspace_size(&cfg, &bytes);
        if (st != DD3G_SUCCESS) {
            logError("workspace query failed: %s %s", dd3g_raster_status_string(st), dd3g_raster_last_error());
            return 0;
        }
        trace("getWorkspaceSize N=%lld C=%d K=%d half=%d -> %zu bytes", static_cast<long long>(cfg.num_gaussians),
              cfg.num_cameras, cfg.sh_coeffs, static_cast<int>(cfg.dtype == DD3G_FLOAT16), bytes);
        return bytes;
    }

    // ---- IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*,
                          int32_t nbOutputs) noexcept override {
        trace("onShapeChange inputs=%d outputs=%d", nbInputs, nbOutputs);
        if (nbInputs != kInputs || nbOutputs != kOutputs) return -1;
        mN = in[0].dims.d[0];
        mK = (int32_t)in[4].dims.d[1];
        mC = (int32_t)in[5].dims.d[0];
        mHalf = in[0].type == DataType::kHALF;
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const*, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        trace("enqueue N=%lld C=%d K=%d", static_cast<long long>(mN), mC, mK);
        dd3g_raster_config cfg = makeConfig(mAttr, mN, mC, mK, mHalf);
        size_t bytes = 0;
        if (dd3g_raster_workspace_size(&cfg, &bytes) != DD3G_SUCCESS) return -1;
        dd3g_raster_buffers buf{};
        buf.struct_size = sizeof(buf);
        buf.means = inputs[0];
        buf.quats = inputs[1];
        buf.scales = inputs[2];
        buf.opacities = inputs[3];
        buf.sh = inputs[4];
        buf.viewmats = static_cast<float const*>(inputs[5]);
        buf.Ks = static_cast<float const*>(inputs[6]);
        buf.background = static_cast<float const*>(inputs[7]);
        buf.rgb = static_cast<float*>(outputs[0]);
        buf.alpha = static_cast<float*>(outputs[1]);
        buf.depth = static_cast<float*>(outputs[2]);
        int st = dd3g_raster_forward(&cfg, &buf, workspace, bytes, stream);
        if (st != DD3G_SUCCESS) {
            logError("%s %s", dd3g_raster_status_string(st), dd3g_raster_last_error());
            return -1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override {
        trace("attachToContext");
        return clone();
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        trace("getFieldsToSerialize");
        return &mFC;
    }

private:
    void buildSerialFields() {
        mFields.clear();
        mFields.emplace_back("width", &mAttr.width, PluginFieldType::kINT32, 1);
        mFields.emplace_back("height", &mAttr.height, PluginFieldType::kINT32, 1);
        mFields.emplace_back("near_plane", &mAttr.near_plane, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("far_plane", &mAttr.far_plane, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("eps2d", &mAttr.eps2d, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("max_intersections", &mAttr.max_intersections, PluginFieldType::kINT32, 1);
        mFields.emplace_back("tight_tiles", &mAttr.tight_tiles, PluginFieldType::kINT32, 1);
        mFC.nbFields = (int32_t)mFields.size();
        mFC.fields = mFields.data();
    }

    Attributes mAttr;
    int64_t mN = 0;
    int32_t mC = 1, mK = 1;
    bool mHalf = false;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFC{};
};

class GaussianRasterizeCreator : public IPluginCreatorV3One {
public:
    GaussianRasterizeCreator() {
        mFields.emplace_back("width", nullptr, PluginFieldType::kINT32, 1);
        mFields.emplace_back("height", nullptr, PluginFieldType::kINT32, 1);
        mFields.emplace_back("near_plane", nullptr, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("far_plane", nullptr, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("eps2d", nullptr, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("max_intersections", nullptr, PluginFieldType::kINT32, 1);
        mFields.emplace_back("tight_tiles", nullptr, PluginFieldType::kINT32, 1);
        mFC.nbFields = (int32_t)mFields.size();
        mFC.fields = mFields.data();
    }

    IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc,
                            TensorRTPhase phase) noexcept override {
        try {
            Attributes a = parseFields(fc);
            trace("createPlugin name=%s phase=%d fields=%d -> %dx%d near=%g far=%g eps2d=%g cap=%d tight=%d",
                  name != nullptr ? name : "(null)", static_cast<int>(phase), fc != nullptr ? fc->nbFields : -1,
                  a.width, a.height, a.near_plane, a.far_plane, a.eps2d, a.max_intersections, a.tight_tiles);
            if (a.width < 1 || a.height < 1) {
                logError("createPlugin: width and height must be >= 1 (got %dx%d)", a.width, a.height);
                return nullptr;
            }
            return new GaussianRasterizePlugin(a);
        } catch (...) {
            return nullptr;
        }
    }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFC; }
    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mFC{};
};

}  // namespace dd3g_trt

extern "C" {

// Entry point of IPluginRegistry::loadLibrary for IPluginV3 creators (TensorRT 10 and later, TensorRT-RTX).
__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static dd3g_trt::GaussianRasterizeCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    dd3g_trt::trace("getCreators -> 1 creator (%s, version %s, namespace %s)", dd3g_trt::kName, dd3g_trt::kVersion,
                    dd3g_trt::kNamespace);
    return creators;
}

// Accepted and not used (see "diagnostics" above); one of the documented entry points of a plugin library.
__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    dd3g_trt::trace("setLoggerFinder %p (not used: errors go to stderr)", static_cast<void*>(finder));
}

// Register with a plugin registry, for applications that link this library: dd3gRegisterTrtPlugin(getPluginRegistry()).
// The registry is an argument so that this library needs no TensorRT symbol (see the top of the file).
__attribute__((visibility("default"))) bool dd3gRegisterTrtPlugin(nvinfer1::IPluginRegistry* registry) {
    if (registry == nullptr) return false;
    int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* c = getCreators(n);
    return registry->registerCreator(*c[0], dd3g_trt::kNamespace);
}

}  // extern "C"
