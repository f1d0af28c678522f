// trt_plugin_smoke.cpp: drive libdd3g_trt_plugin.so the way TensorRT does, without TensorRT and without a GPU.
// It dlopens the library as IPluginRegistry::loadLibrary does (getCreators, setLoggerFinder), fills the creator's
// fields the way the ONNX parser does, and makes the build-phase calls of an engine build (capabilities, output
// types and shapes, formats, configure, workspace) plus the serialise / re-create round trip, clone and delete.
// enqueue is not called (that needs a GPU: cuda/tests/trt_cpp_plugin_check.py on the GPU host builds an engine).
// Compiled against TensorRT's headers only (tests/cuda/test_trt_plugin_smoke.py):
//   g++ -std=c++17 -isystem $TENSORRT_ROOT/include -isystem $CUDA/include -Icuda/include
//       cuda/tests/trt_plugin_smoke.cpp -ldl -o /tmp/trt_plugin_smoke && /tmp/trt_plugin_smoke build/libdd3g_trt_plugin.so
// getWorkspaceSize asks libdd3g_raster, whose CUB size query needs a CUDA device: without one that check is
// reported as skipped.
// Prints "SMOKE OK" and exits 0 when every check passes.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

int gFailures = 0;

void check(bool ok, char const* what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++gFailures;
}

// ---- a constant-only IExprBuilder (TensorRT's own lives in its library)
class ConstImpl : public apiv::VDimensionExpr {
public:
    explicit ConstImpl(int64_t v) : mV(v) {}
    bool isConstant() const override { return mV >= 0; }
    int64_t getConstantValue() const override { return mV; }
    bool isSizeTensor() const override { return false; }

private:
    int64_t mV;
};

class Const : public IDimensionExpr {
public:
    explicit Const(int64_t v) : mValue(v) { mImpl = &mValue; }
    ~Const() noexcept override = default;

private:
    ConstImpl mValue;
};

class BuilderImpl : public apiv::VExprBuilder {
public:
    IDimensionExpr const* constant(int64_t value) override {
        mKeep.push_back(new Const(value));
        return mKeep.back();
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override {
        return constant(-1);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        return constant(-1);
    }
    ~BuilderImpl() noexcept override {
        for (auto* c : mKeep) delete c;
    }

private:
    std::vector<Const*> mKeep;
};

class Builder : public IExprBuilder {
public:
    Builder() { mImpl = &mB; }
    ~Builder() noexcept override = default;

private:
    BuilderImpl mB;
};

// ---- a logger finder, as TensorRT passes through setLoggerFinder (the plugin must accept it and not call it)
class Finder : public ILoggerFinder {
public:
    ILogger* findLogger() override {
        ++calls;
        return nullptr;
    }
    int calls = 0;
};

Dims dims(std::initializer_list<int64_t> d) {
    Dims r{};
    r.nbDims = static_cast<int32_t>(d.size());
    int i = 0;
    for (int64_t v : d) r.d[i++] = v;
    return r;
}

// Inputs and outputs of the node: N Gaussians (fp32 or fp16), C cameras, K SH coefficients, an H x W image.
std::vector<DynamicPluginTensorDesc> tensorDescs(int64_t n, int64_t c, int64_t k, int64_t h, int64_t w, bool half) {
    std::vector<Dims> shapes = {dims({n, 3}), dims({n, 4}), dims({n, 3}), dims({n}), dims({n, k, 3}),
                                dims({c, 4, 4}), dims({c, 3, 3}), dims({c, 3}),
                                dims({c, h, w, 3}), dims({c, h, w, 1}), dims({c, h, w, 1})};
    std::vector<DynamicPluginTensorDesc> r(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
        r[i].desc.dims = shapes[i];
        r[i].desc.type = (half && i < 5) ? DataType::kHALF : DataType::kFLOAT;
        r[i].desc.format = TensorFormat::kLINEAR;
        r[i].desc.scale = 1.f;
        r[i].min = r[i].max = r[i].opt = shapes[i];
    }
    return r;
}

double fieldValue(PluginField const& f) {
    switch (f.type) {
        case PluginFieldType::kINT32: return static_cast<int32_t const*>(f.data)[0];
        case PluginFieldType::kINT64: return static_cast<double>(static_cast<int64_t const*>(f.data)[0]);
        case PluginFieldType::kFLOAT32: return static_cast<float const*>(f.data)[0];
        case PluginFieldType::kFLOAT64: return static_cast<double const*>(f.data)[0];
        default: return -12345.0;
    }
}

}  // namespace

int main(int argc, char** argv) {
    char const* path = argc > 1 ? argv[1] : "build/libdd3g_trt_plugin.so";
    void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::printf("FAIL dlopen %s: %s\n", path, dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using Register = bool (*)(IPluginRegistry*);
    using LastError = char const* (*)();
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    auto registerPlugin = reinterpret_cast<Register>(dlsym(lib, "dd3gRegisterTrtPlugin"));
    // libdd3g_raster.so, loaded as the plugin's dependency: dlsym on the plugin's handle searches it too.
    auto lastError = reinterpret_cast<LastError>(dlsym(lib, "dd3g_raster_last_error"));
    check(lastError != nullptr, "libdd3g_raster.so loaded with the plugin (RUNPATH $ORIGIN)");
    check(getCreators != nullptr, "getCreators exported");
    check(setLoggerFinder != nullptr, "setLoggerFinder exported");
    check(dlsym(lib, "getPluginCreators") == nullptr, "no getPluginCreators (that entry point is for V2 creators)");
    if (getCreators == nullptr) return 1;
    check(registerPlugin != nullptr && !registerPlugin(nullptr), "dd3gRegisterTrtPlugin(nullptr) -> false");
    Finder finder;
    if (setLoggerFinder != nullptr) setLoggerFinder(&finder);

    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    check(nb == 1 && creators != nullptr && creators[0] != nullptr, "getCreators -> 1 creator");
    if (nb != 1 || creators == nullptr || creators[0] == nullptr) return 1;
    InterfaceInfo ci = creators[0]->getInterfaceInfo();
    std::printf("     creator interface %s %d.%d\n", ci.kind, ci.major, ci.minor);
    check(std::strcmp(ci.kind, "PLUGIN CREATOR_V3ONE") == 0 && ci.major == 1, "creator is IPluginCreatorV3One 1.x");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    std::printf("     creator name=%s version=%s namespace=%s\n", creator->getPluginName(),
                creator->getPluginVersion(), creator->getPluginNamespace());
    check(std::strcmp(creator->getPluginName(), "GaussianRasterize") == 0 &&
              std::strcmp(creator->getPluginVersion(), "1") == 0 &&
              std::strcmp(creator->getPluginNamespace(), "dd3g") == 0,
          "creator is dd3g::GaussianRasterize version 1 (the ONNX node's op type and attributes)");

    // Fields the way the ONNX parser fills them: each declared field, converted to its declared type.
    PluginFieldCollection const* declared = creator->getFieldNames();
    check(declared != nullptr && declared->nbFields == 7, "7 declared fields");
    int32_t const ints[] = {256, 192, 0, 1};  // width, height, max_intersections, tight_tiles
    float const floats[] = {0.01f, 1e10f, 0.3f};  // near_plane, far_plane, eps2d
    std::vector<PluginField> fields;
    for (int32_t i = 0; declared != nullptr && i < declared->nbFields; ++i) {
        PluginField const& d = declared->fields[i];
        std::string n = d.name;
        void const* data = n == "width" ? (void const*)&ints[0] : n == "height" ? (void const*)&ints[1]
                         : n == "max_intersections" ? (void const*)&ints[2] : n == "tight_tiles" ? (void const*)&ints[3]
                         : n == "near_plane" ? (void const*)&floats[0] : n == "far_plane" ? (void const*)&floats[1]
                         : n == "eps2d" ? (void const*)&floats[2] : nullptr;
        bool const isInt = n == "width" || n == "height" || n == "max_intersections" || n == "tight_tiles";
        check(data != nullptr && d.type == (isInt ? PluginFieldType::kINT32 : PluginFieldType::kFLOAT32),
              ("declared field " + n + " has the expected type").c_str());
        fields.emplace_back(d.name, data, d.type, 1);
    }
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};

    IPluginV3* plugin = creator->createPlugin("render", &fc, TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin(kBUILD)");
    if (plugin == nullptr) return 1;
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0, "core capability");
    check(build && std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0 &&
              build->getInterfaceInfo().major == 1,
          "build capability (PLUGIN_V3ONE_BUILD 1)");
    check(runtime && std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
          "runtime capability");
    if (!core || !build || !runtime) return 1;
    check(std::strcmp(core->getPluginName(), "GaussianRasterize") == 0 &&
              std::strcmp(core->getPluginNamespace(), "dd3g") == 0 && std::strcmp(core->getPluginVersion(), "1") == 0,
          "plugin name / namespace / version");
    check(build->getNbOutputs() == 3, "3 outputs");

    for (bool half : {false, true}) {
        std::string tag = half ? " (fp16 Gaussians)" : " (fp32 Gaussians)";
        auto io = tensorDescs(4096, 2, 16, 192, 256, half);
        DataType in[8], out[3];
        for (int i = 0; i < 8; ++i) in[i] = io[i].desc.type;
        check(build->getOutputDataTypes(out, 3, in, 8) == 0 && out[0] == DataType::kFLOAT &&
                  out[1] == DataType::kFLOAT && out[2] == DataType::kFLOAT,
              ("output types float" + tag).c_str());
        Builder b;
        std::vector<DimsExprs> inExprs(8);
        for (int i = 0; i < 8; ++i) {
            inExprs[i].nbDims = io[i].desc.dims.nbDims;
            for (int j = 0; j < inExprs[i].nbDims; ++j) inExprs[i].d[j] = b.constant(io[i].desc.dims.d[j]);
        }
        DimsExprs outExprs[3];
        bool shapesOk = build->getOutputShapes(inExprs.data(), 8, nullptr, 0, outExprs, 3, b) == 0;
        int64_t const last[3] = {3, 1, 1};
        for (int i = 0; shapesOk && i < 3; ++i) {
            shapesOk = outExprs[i].nbDims == 4 && outExprs[i].d[0]->getConstantValue() == 2 &&
                       outExprs[i].d[1]->getConstantValue() == 192 && outExprs[i].d[2]->getConstantValue() == 256 &&
                       outExprs[i].d[3]->getConstantValue() == last[i];
        }
        check(shapesOk, ("output shapes [C,H,W,3], [C,H,W,1], [C,H,W,1]" + tag).c_str());
        bool formats = true;
        for (int pos = 0; pos < 11; ++pos) formats = formats && build->supportsFormatCombination(pos, io.data(), 8, 3);
        check(formats, ("supportsFormatCombination accepts the node's types" + tag).c_str());
        auto bad = io;
        bad[1].desc.type = half ? DataType::kFLOAT : DataType::kHALF;
        check(!build->supportsFormatCombination(1, bad.data(), 8, 3), ("rejects mixed Gaussian dtypes" + tag).c_str());
        check(build->configurePlugin(io.data(), 8, io.data() + 8, 3) == 0, ("configurePlugin" + tag).c_str());
        size_t ws = build->getWorkspaceSize(io.data(), 8, io.data() + 8, 3);
        std::printf("     workspace%s: %zu bytes\n", tag.c_str(), ws);
        std::string const err = (ws == 0 && lastError != nullptr) ? lastError() : "";
        if (err.find("device") != std::string::npos) {
            std::printf("skip getWorkspaceSize%s: no usable CUDA device here (%s)\n", tag.c_str(), err.c_str());
        } else {
            check(ws > 0, ("getWorkspaceSize > 0" + tag).c_str());
        }
        std::vector<PluginTensorDesc> pd(11);
        for (int i = 0; i < 11; ++i) pd[i] = io[i].desc;
        check(runtime->onShapeChange(pd.data(), 8, pd.data() + 8, 3) == 0, ("onShapeChange" + tag).c_str());
    }

    // Serialise, re-create for the runtime phase (as engine deserialisation does) and compare.
    PluginFieldCollection const* ser = runtime->getFieldsToSerialize();
    check(ser != nullptr && ser->nbFields == 7, "getFieldsToSerialize: 7 fields");
    IPluginV3* again = creator->createPlugin("render", ser, TensorRTPhase::kRUNTIME);
    check(again != nullptr, "createPlugin(kRUNTIME) from the serialised fields");
    if (again != nullptr) {
        auto* rt2 = static_cast<IPluginV3OneRuntime*>(again->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* ser2 = rt2->getFieldsToSerialize();
        bool same = ser2 != nullptr && ser2->nbFields == ser->nbFields;
        for (int i = 0; same && i < ser->nbFields; ++i) {
            same = std::strcmp(ser->fields[i].name, ser2->fields[i].name) == 0 &&
                   fieldValue(ser->fields[i]) == fieldValue(ser2->fields[i]);
        }
        check(same, "serialised fields survive the round trip");
        for (int i = 0; ser2 && i < ser2->nbFields; ++i) {
            std::printf("     field %s = %g\n", ser2->fields[i].name, fieldValue(ser2->fields[i]));
        }
        delete again;
    }
    IPluginV3* c = plugin->clone();
    check(c != nullptr, "clone");
    delete c;
    IPluginV3* attached = runtime->attachToContext(nullptr);
    check(attached != nullptr, "attachToContext");
    delete attached;
    delete plugin;

    // A bad attribute: no plugin (and a message on stderr).
    int32_t const zero = 0;
    PluginField badField("width", &zero, PluginFieldType::kINT32, 1);
    PluginFieldCollection badFc{1, &badField};
    check(creator->createPlugin("bad", &badFc, TensorRTPhase::kBUILD) == nullptr, "width 0 -> no plugin");
    // An INT64 attribute (what an ONNX int is before conversion) is read as well.
    int64_t const w64 = 64;
    PluginField f64("width", &w64, PluginFieldType::kINT64, 1);
    PluginField h32("height", &ints[1], PluginFieldType::kINT32, 1);
    PluginField both[] = {f64, h32};
    PluginFieldCollection fc64{2, both};
    IPluginV3* p64 = creator->createPlugin("i64", &fc64, TensorRTPhase::kBUILD);
    check(p64 != nullptr, "INT64 width accepted");
    delete p64;
    check(finder.calls == 0, "the ILoggerFinder was not called");

    if (gFailures == 0) {
        std::printf("SMOKE OK\n");
    } else {
        std::printf("SMOKE FAILED: %d check(s)\n", gFailures);
    }
    return gFailures == 0 ? 0 : 1;
}
