"""The diffusion backends' models for bench/gpu_models.py: each one's published architecture (its pipeline's
components as (class, config) parts, built on the meta device and given random weights on the GPU) and
its model card's defaults (CASES, at the end).

Where each config comes from is said beside it. Most are the configs diffusers' own conversion scripts
write into the published folders (huggingface/diffusers `scripts/convert_*_to_diffusers.py`, read at
commit 58eb52c0, 2026-08); a class whose defaults are the published config is built with `{}`. Values
that change no shape or cost (latents_mean/std, scaling factors) are left at the class defaults.

Text encoders are not built: the benchmark passes random prompt embeddings of the shape they produce
(PROMPTS), so their weights are neither timed nor in the peak memory (they run once a job, not once a
step). Image encoders, which the pipelines call themselves, are built at their real size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from i2v_watcher.backends.card import WEBUI_CARD, ModelCard
from i2v_watcher.backends.cogvideox_i2v import CARD_1_5
from i2v_watcher.backends.hunyuan_i2v import HUNYUAN_I2V
from i2v_watcher.backends.ltx2 import MIN_SIDE, Ltx2Backend
from i2v_watcher.backends.ltx_video import LTX_VIDEO_09
from i2v_watcher.backends.svd import SVD_XT
from i2v_watcher.backends.wan_i2v import WAN_21_I2V_14B, WAN_22_I2V_A14B, WAN_22_TI2V_5B


@dataclass(frozen=True)
class Part:
    """A model component: its class and config (a dict for diffusers, a config object for transformers),
    built without weights and then given random ones where it is to run."""

    cls: type
    config: Any


# (tokens, width) of the prompt embeddings each text encoder gives the denoiser, per pipeline default:
# the width is read from the denoiser's config, so the tiny builds get theirs.
PROMPT_TOKENS = {
    "i2vgen-xl": 77,  # OpenCLIP ViT-H/14 text tower, 77 tokens
    "wan-i2v": 512,  # UMT5-XXL, max_sequence_length 512 (WanImageToVideoPipeline's default)
    "ltx-video": 256,  # T5-v1.1-XXL, max_sequence_length 256 (LTXConditionPipeline's default)
    "cogvideox-i2v": 226,  # T5-v1.1-XXL, max_text_seq_length 226 (the transformer's config)
    # Llava-Llama-3-8B: 256 text tokens and the image's 576 features taken every 4th for the 16-channel
    # `token_replace` checkpoint (the pipeline's image_embed_interleave): 256 + 144.
    "hunyuan-i2v": 256 + 576 // 4,
    # Gemma 3 12B: every layer's hidden states (48 and the embeddings') stacked, 1024 tokens (the pipeline's
    # and the backend's max_sequence_length); the width is the connectors' caption_channels x 49.
    "ltx2": 1024,
}


def _clip_vit_h(with_projection: bool = True) -> tuple[Part, Any]:
    """CLIP ViT-H/14's vision tower (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json: width 1280, 32
    layers, 16 heads, patch 14, 224 px, projection 1024): the image encoder of I2VGen-XL, SVD and Wan 2.1."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    config = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
                              num_hidden_layers=32, patch_size=14, image_size=224, projection_dim=1024,
                              hidden_act="gelu", layer_norm_eps=1e-5)
    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    return Part(cls, config), CLIPImageProcessor(crop_size=224, size=224)


def i2vgen_xl() -> dict[str, Any]:
    """ali-vilab/i2vgen-xl: I2VGenXLUNet's defaults are its UNet (1.42 B parameters); the VAE is Stable
    Diffusion's AutoencoderKL (its vae/config.json)."""
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet

    image_encoder, feature_extractor = _clip_vit_h()
    vae = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
           "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
    return {"unet": Part(I2VGenXLUNet, {}), "vae": Part(AutoencoderKL, vae), "image_encoder": image_encoder,
            "feature_extractor": feature_extractor, "text_encoder": None, "tokenizer": None,
            "scheduler": DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       clip_sample=False, set_alpha_to_one=False)}


def svd() -> dict[str, Any]:
    """stabilityai/stable-video-diffusion-img2vid-xt: UNetSpatioTemporalConditionModel's defaults are its
    unet/config.json (320/640/1280/1280, heads 5/10/20/20, 25 frames); its VAE is the SD encoder with the
    temporal decoder: generative-models' configs/inference/svd.yaml gives ch 128, ch_mult 1/2/4/4,
    2 res blocks, 4 latent channels, i.e. 128/256/512/512 and 2 layers per block here."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )

    image_encoder, feature_extractor = _clip_vit_h()
    vae = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
           "down_block_types": ["DownEncoderBlock2D"] * 4}
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    return {"unet": Part(UNetSpatioTemporalConditionModel, {}),
            "vae": Part(AutoencoderKLTemporalDecoder, vae), "image_encoder": image_encoder,
            "feature_extractor": feature_extractor, "scheduler": scheduler}


# convert_wan_to_diffusers.py get_transformer_config(): the 14B of Wan 2.1 I2V and of each Wan 2.2 expert.
_WAN_14B = {"attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 13824,
            "freq_dim": 256, "in_channels": 36, "num_attention_heads": 40, "num_layers": 40,
            "out_channels": 16, "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "text_dim": 4096}


def _wan_scheduler(flow_shift: float) -> Any:
    """The conversion script's scheduler: UniPC on flow sigmas, shift 3.0 (I2V) or 5.0 (TI2V)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=flow_shift)


def wan21_i2v_14b() -> dict[str, Any]:
    """Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: the "Wan-I2V-14B-480p" transformer (CLIP image features in
    through added K/V projections), the Wan VAE (`AutoencoderKLWan()`, as convert_vae() builds it), the
    CLIP ViT-H image encoder the script loads."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    image_encoder, image_processor = _clip_vit_h()
    transformer = {**_WAN_14B, "image_dim": 1280, "added_kv_proj_dim": 5120}
    return {"transformer": Part(WanTransformer3DModel, transformer), "vae": Part(AutoencoderKLWan, {}),
            "image_encoder": image_encoder, "image_processor": image_processor, "text_encoder": None,
            "tokenizer": None, "scheduler": _wan_scheduler(3.0)}


def wan22_i2v_a14b() -> dict[str, Any]:
    """Wan-AI/Wan2.2-I2V-A14B-Diffusers: two "Wan2.2-I2V-14B-720p" experts (high and low noise), the Wan
    2.1 VAE, no image encoder, boundary_ratio 0.9 (the conversion script's I2V value)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    expert = {**_WAN_14B, "added_kv_proj_dim": None}
    return {"transformer": Part(WanTransformer3DModel, expert),
            "transformer_2": Part(WanTransformer3DModel, expert), "vae": Part(AutoencoderKLWan, {}),
            "text_encoder": None, "tokenizer": None, "scheduler": _wan_scheduler(3.0), "boundary_ratio": 0.9}


def wan22_ti2v_5b() -> dict[str, Any]:
    """Wan-AI/Wan2.2-TI2V-5B-Diffusers: the "Wan2.2-TI2V-5B" transformer and the 16x VAE
    (vae22_diffusers_config, its shapes), per-patch timesteps (expand_timesteps)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    transformer = {**_WAN_14B, "ffn_dim": 14336, "in_channels": 48, "num_attention_heads": 24,
                   "num_layers": 30, "out_channels": 48}
    vae = {"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "is_residual": True, "in_channels": 12,
           "out_channels": 12, "scale_factor_temporal": 4, "scale_factor_spatial": 16, "patch_size": 2,
           "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}
    return {"transformer": Part(WanTransformer3DModel, transformer), "vae": Part(AutoencoderKLWan, vae),
            "text_encoder": None, "tokenizer": None, "scheduler": _wan_scheduler(5.0),
            "expand_timesteps": True}


def ltx_video_095() -> dict[str, Any]:
    """Lightricks/LTX-Video-0.9.5: convert_ltx_to_diffusers.py's transformer for every version but 0.9.7
    (the 2B: 28 layers, 32 heads of 64) and its "0.9.5" VAE; the scheduler it writes for 0.9.5."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    transformer = {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
                   "num_attention_heads": 32, "attention_head_dim": 64, "cross_attention_dim": 2048,
                   "num_layers": 28, "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads",
                   "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 4096,
                   "attention_bias": True, "attention_out_bias": True}
    vae = {"in_channels": 3, "out_channels": 3, "latent_channels": 128,
           "block_out_channels": (128, 256, 512, 1024, 2048),
           "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
           "decoder_block_out_channels": (256, 512, 1024),
           "layers_per_block": (4, 6, 6, 2, 2), "decoder_layers_per_block": (5, 5, 5, 5),
           "spatio_temporal_scaling": (True, True, True, True),
           "decoder_spatio_temporal_scaling": (True, True, True), "decoder_inject_noise": (False,) * 4,
           "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
           "upsample_residual": (True, True, True), "upsample_factor": (2, 2, 2),
           "timestep_conditioning": True,
           "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0,
           "encoder_causal": True, "decoder_causal": False, "spatial_compression_ratio": 32,
           "temporal_compression_ratio": 8}
    return {"transformer": Part(LTXVideoTransformer3DModel, transformer),
            "vae": Part(AutoencoderKLLTXVideo, vae), "text_encoder": None, "tokenizer": None,
            "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False)}


def cogvideox15_i2v() -> dict[str, Any]:
    """THUDM/CogVideoX1.5-5B-I2V: convert_cogvideox_to_diffusers.py with --i2v --version 1.5 and the 5B's
    42 layers, 48 heads, rotary embeddings (its help text); the VAE with scaling 0.7 and inverted latent
    scaling (1.5); its CogVideoXDDIMScheduler (snr_shift_scale 1.0 for the 5B)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    transformer = {"in_channels": 32, "num_layers": 42, "num_attention_heads": 48,
                   "use_rotary_positional_embeddings": True, "ofs_embed_dim": 512,
                   "use_learned_positional_embeddings": False, "patch_size": 2, "patch_size_t": 2,
                   "patch_bias": False, "sample_height": 300, "sample_width": 300, "sample_frames": 81}
    scheduler = CogVideoXDDIMScheduler.from_config({
        "snr_shift_scale": 1.0, "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True, "set_alpha_to_one": True, "timestep_spacing": "trailing"})
    return {"transformer": Part(CogVideoXTransformer3DModel, transformer),
            "vae": Part(AutoencoderKLCogVideoX, {"scaling_factor": 0.7, "invert_scale_latents": True}),
            "text_encoder": None, "tokenizer": None, "scheduler": scheduler}


def hunyuan_i2v() -> dict[str, Any]:
    """hunyuanvideo-community/HunyuanVideo-I2V: convert_hunyuan_video_to_diffusers.py's "HYVideo-T/2-I2V-16ch"
    transformer (20 double and 40 single blocks, 24 heads of 128, guidance embedding, token_replace) and
    `AutoencoderKLHunyuanVideo()` (its convert_vae())."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoTransformer3DModel,
    )

    transformer = {"in_channels": 16, "out_channels": 16, "num_attention_heads": 24,
                   "attention_head_dim": 128, "num_layers": 20, "num_single_layers": 40,
                   "num_refiner_layers": 2, "mlp_ratio": 4.0,
                   "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
                   "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0,
                   "rope_axes_dim": (16, 56, 56), "image_condition_type": "token_replace"}
    return {"transformer": Part(HunyuanVideoTransformer3DModel, transformer),
            "vae": Part(AutoencoderKLHunyuanVideo, {}), "text_encoder": None, "tokenizer": None,
            "text_encoder_2": None, "tokenizer_2": None, "image_processor": None,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0)}


def ltx2() -> dict[str, Any]:
    """Lightricks/LTX-2 (ltx-2-19b-dev): convert_ltx2_to_diffusers.py's "2.0" configs, the script's default
    version: the 19B audio-video transformer (48 layers; video 32 heads of 128, audio 32 of 64), the text
    connectors (the Gemma 3 12B's 49 hidden states in), the video VAE (32x spatial, 8x temporal; no
    timestep conditioning, the script's default), the audio VAE and the 24 kHz vocoder; the scheduler it
    writes for the non-distilled checkpoint."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    transformer = {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
                   "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
                   "vae_scale_factors": (8, 32, 32), "pos_embed_max_pos": 20, "base_height": 2048,
                   "base_width": 2048, "gated_attn": False, "cross_attn_mod": False,
                   "audio_in_channels": 128, "audio_out_channels": 128, "audio_patch_size": 1,
                   "audio_patch_size_t": 1, "audio_num_attention_heads": 32, "audio_attention_head_dim": 64,
                   "audio_cross_attention_dim": 2048, "audio_scale_factor": 4, "audio_pos_embed_max_pos": 20,
                   "audio_sampling_rate": 16000, "audio_hop_length": 160, "audio_gated_attn": False,
                   "audio_cross_attn_mod": False, "num_layers": 48, "activation_fn": "gelu-approximate",
                   "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False, "norm_eps": 1e-6,
                   "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True,
                   "rope_theta": 10000.0, "rope_double_precision": True, "causal_offset": 1,
                   "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000,
                   "rope_type": "split", "use_prompt_embeddings": True, "perturbed_attn": False}
    connectors = {"caption_channels": 3840, "text_proj_in_factor": 49,
                  "video_connector_num_attention_heads": 30, "video_connector_attention_head_dim": 128,
                  "video_connector_num_layers": 2, "video_connector_num_learnable_registers": 128,
                  "video_gated_attn": False, "audio_connector_num_attention_heads": 30,
                  "audio_connector_attention_head_dim": 128, "audio_connector_num_layers": 2,
                  "audio_connector_num_learnable_registers": 128, "audio_gated_attn": False,
                  "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0, "rope_double_precision": True,
                  "causal_temporal_positioning": False, "rope_type": "split",
                  "per_modality_projections": False, "proj_bias": False}
    vae = {"in_channels": 3, "out_channels": 3, "latent_channels": 128,
           "block_out_channels": (256, 512, 1024, 2048),
           "down_block_types": ("LTX2VideoDownBlock3D",) * 4, "decoder_block_out_channels": (256, 512, 1024),
           "layers_per_block": (4, 6, 6, 2, 2), "decoder_layers_per_block": (5, 5, 5, 5),
           "spatio_temporal_scaling": (True, True, True, True),
           "decoder_spatio_temporal_scaling": (True, True, True), "decoder_inject_noise": (False,) * 4,
           "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
           "upsample_type": ("spatiotemporal",) * 3, "upsample_residual": (True, True, True),
           "upsample_factor": (2, 2, 2), "timestep_conditioning": False, "patch_size": 4, "patch_size_t": 1,
           "resnet_norm_eps": 1e-6, "encoder_causal": True, "decoder_causal": False,
           "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "reflect",
           "spatial_compression_ratio": 32, "temporal_compression_ratio": 8}
    audio_vae = {"base_channels": 128, "output_channels": 2, "ch_mult": (1, 2, 4), "num_res_blocks": 2,
                 "attn_resolutions": None, "in_channels": 2, "resolution": 256, "latent_channels": 8,
                 "norm_type": "pixel", "causality_axis": "height", "dropout": 0.0,
                 "mid_block_add_attention": False, "sample_rate": 16000, "mel_hop_length": 160,
                 "is_causal": True, "mel_bins": 64, "double_z": True}
    vocoder = {"in_channels": 128, "hidden_channels": 1024, "out_channels": 2,
               "upsample_kernel_sizes": [16, 15, 8, 4, 4], "upsample_factors": [6, 5, 2, 2, 2],
               "resnet_kernel_sizes": [3, 7, 11], "resnet_dilations": [[1, 3, 5]] * 3,
               "act_fn": "leaky_relu", "leaky_relu_negative_slope": 0.1, "antialias": False,
               "final_act_fn": "tanh", "final_bias": True, "output_sampling_rate": 24000}
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096,
                                                shift_terminal=0.1)
    return {"transformer": Part(LTX2VideoTransformer3DModel, transformer),
            "connectors": Part(LTX2TextConnectors, connectors), "vae": Part(AutoencoderKLLTX2Video, vae),
            "audio_vae": Part(AutoencoderKLLTX2Audio, audio_vae), "vocoder": Part(LTX2Vocoder, vocoder),
            "text_encoder": None, "tokenizer": None, "scheduler": scheduler}


SIDE_480P = (832, 480)  # Wan's 480p; a multiple of 32, so every transformer model takes it
TEXT_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


@dataclass(frozen=True)
class Case:
    """One model at one size. The defaults are its model card's (the source says whose)."""

    backend: str  # the registry name
    name: str  # the model, as `--only` and the metadata name it
    label: str
    pipeline: str  # the diffusers class
    real: Callable[[], dict[str, Any]]  # the published architecture (a function above)
    tiny: str  # the tests/tiny_models.py builder, for --tiny
    width: int
    height: int
    frames: int
    steps: int  # the card's schedule, which the per-step time is extrapolated to
    guidance: float
    source: str
    vae_tiling: bool = False  # what the model's docs ask for its decode at this size
    more_sizes: tuple[tuple[int, int], ...] = ()
    call: dict[str, Any] = field(default_factory=dict)  # more pipeline arguments, as the backend passes
    text_parts: tuple[str, ...] = TEXT_PARTS  # components on the prompt's side, not built
    tiny_side: int = 32  # the side --tiny runs the tiny build at: its smallest that works


def from_card(backend: str, card: ModelCard, pipeline: str, real: Callable[[], dict[str, Any]], tiny: str,
              source: str, **more: Any) -> Case:
    """A model at its card's size, frames, schedule and guidance (the backend's own ModelCard)."""
    return Case(backend, card.name, card.label, pipeline, real, tiny, card.width, card.height,
                card.num_frames, card.steps, card.guidance_scale, source, **more)


CASES = (
    from_card("i2vgen-xl", WEBUI_CARD, "I2VGenXLPipeline", i2vgen_xl, "build_i2vgen_xl",
              "the pipeline's defaults (its model card's)", call={"target_fps": 16}),
    from_card("svd", SVD_XT, "StableVideoDiffusionPipeline", svd, "build_svd",
              "stabilityai/stable-video-diffusion-img2vid-xt model card",
              call={"fps": 7, "decode_chunk_size": 4}),
    from_card("wan-i2v", WAN_21_I2V_14B, "WanImageToVideoPipeline", wan21_i2v_14b, "build_wan_i2v",
              "Wan-Video/Wan2.1 configs"),
    from_card("wan-i2v", WAN_22_I2V_A14B, "WanImageToVideoPipeline", wan22_i2v_a14b, "build_wan22_a14b",
              "Wan-Video/Wan2.2 configs", more_sizes=(SIDE_480P,)),
    from_card("wan-i2v", WAN_22_TI2V_5B, "WanImageToVideoPipeline", wan22_ti2v_5b, "build_wan22_ti2v_5b",
              "Wan-Video/Wan2.2 configs", more_sizes=(SIDE_480P,)),
    # 121 frames (about 5 s at 24 fps): the published 512x768x121 memory figure's clip.
    from_card("ltx-video", LTX_VIDEO_09, "LTXConditionPipeline", ltx_video_095, "build_ltx_video",
              "diffusers' LTX-Video docs", call={"frame_rate": 25, "decode_timestep": 0.05,
                                                 "decode_noise_scale": 0.025}),
    from_card("cogvideox-i2v", CARD_1_5, "CogVideoXImageToVideoPipeline", cogvideox15_i2v,
              "build_cogvideox_i2v", "THUDM/CogVideoX1.5-5B-I2V model card", vae_tiling=True,
              more_sizes=(SIDE_480P,)),
    from_card("hunyuan-i2v", HUNYUAN_I2V, "HunyuanVideoImageToVideoPipeline",
              hunyuan_i2v, "build_hunyuan_i2v", "Tencent's HunyuanVideo-I2V README", vae_tiling=True,
              more_sizes=(SIDE_480P,), text_parts=(*TEXT_PARTS, "image_processor")),
    # 768x512, 121 frames at 24 fps, 40 steps at guidance 4 (the card's); the arguments the backend passes
    # for an LTX-2.0 checkpoint (its legacy cross-attention timestep, STG at block 29), and the input image
    # as it is (image_crf 0: the backend re-encodes it with ffmpeg before the call, outside the steps).
    from_card("ltx2", Ltx2Backend.card, "LTX2ImageToVideoPipeline", ltx2, "build_ltx2",
              "diffusers' LTX-2 docs",
              call={"frame_rate": Ltx2Backend.card.fps, "image_crf": 0, "use_cross_timestep": False,
                    "spatio_temporal_guidance_blocks": [29]}, tiny_side=MIN_SIDE),
)
PENDING: dict[str, str] = {}  # a backend whose Case is not written yet: its reason
